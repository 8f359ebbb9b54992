// The SSH wire encoding SFTP uses (RFC 4251 section 5): big-endian integers and uint32-length-prefixed
// strings. Writer builds whole packets and back-patches the length; Reader checks every read against the
// bytes that remain and fails as a value, so nothing from the network can make it read out of bounds or
// allocate more than the packet holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "sftp/protocol.hpp"
#include "util/result.hpp"

// Evaluates a Result-returning expression; on error returns that error from the enclosing function,
// otherwise moves the value into a new variable `lhs`.
#define SFTPFS_CONCAT_INNER(a, b) a##b
#define SFTPFS_CONCAT(a, b) SFTPFS_CONCAT_INNER(a, b)
#define SFTPFS_ASSIGN_OR_RETURN(lhs, expr) \
  SFTPFS_ASSIGN_OR_RETURN_IMPL(SFTPFS_CONCAT(sftpfs_result_, __LINE__), lhs, expr)
#define SFTPFS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp) return tmp.take_error();                 \
  lhs = std::move(tmp).value()
// Same for a Status (Result<void>).
#define SFTPFS_RETURN_IF_ERROR(expr)                               \
  do {                                                             \
    auto sftpfs_status_ = (expr);                                  \
    if (!sftpfs_status_) return sftpfs_status_.take_error();       \
  } while (0)

namespace sftpfs::sftp {

// Attribute flag bits this v3 client knows how to lay out.
inline constexpr uint32_t kKnownAttrFlags = SSH_FILEXFER_ATTR_SIZE | SSH_FILEXFER_ATTR_UIDGID |
                                            SSH_FILEXFER_ATTR_PERMISSIONS | SSH_FILEXFER_ATTR_ACMODTIME |
                                            SSH_FILEXFER_ATTR_EXTENDED;

// Smallest encodings, used to bound counts read from the wire before anything is reserved.
inline constexpr size_t kMinStringSize = 4;                      // empty string: its length only
inline constexpr size_t kMinAttrsSize = 4;                       // flags = 0
inline constexpr size_t kMinExtensionPairSize = 2 * kMinStringSize;
inline constexpr size_t kMinNameEntrySize = 2 * kMinStringSize + kMinAttrsSize;

class Writer {
 public:
  // Starts a packet: a placeholder uint32 length, then the type byte.
  explicit Writer(uint8_t packet_type, size_t reserve = 64);

  Writer& u8(uint8_t v);
  Writer& u32(uint32_t v);
  Writer& u64(uint64_t v);
  Writer& string(std::string_view s);
  Writer& string(ByteView s);
  Writer& raw(ByteView bytes);  // no length prefix
  // Writes flags then the fields they select. Only flag bits this client knows are sent, so the flags
  // on the wire always describe exactly the fields that follow.
  Writer& attrs(const Attrs& a);

  size_t size() const { return buf_.size(); }
  // A string whose contents are the given uint32s back to back (users-groups-by-id's id lists).
  Writer& u32_list(std::span<const uint32_t> values);

  // Back-patches the length (everything after the length field) and hands the packet over; the Writer
  // is empty afterwards.
  Bytes finish();

 private:
  Bytes buf_;
};

class Reader {
 public:
  explicit Reader(ByteView data) : data_(data) {}

  size_t remaining() const { return data_.size() - pos_; }
  bool at_end() const { return pos_ == data_.size(); }
  size_t position() const { return pos_; }

  Result<uint8_t> u8();
  Result<uint32_t> u32();
  Result<uint64_t> u64();
  // The bytes of a string, pointing into the input (no copy, no allocation).
  Result<ByteView> string_bytes();
  Result<std::string> string();
  // Everything not yet read.
  ByteView rest();
  Result<Attrs> attrs();
  // Reads a uint32 element count and checks that `count * min_element_size` bytes could follow, so a
  // hostile count cannot make the caller reserve memory the packet cannot fill.
  Result<uint32_t> count(size_t min_element_size);
  // Error unless every byte has been consumed.
  Status expect_end(std::string_view what) const;

 private:
  Status need(size_t n, std::string_view what) const;

  ByteView data_;
  size_t pos_ = 0;
};

}  // namespace sftpfs::sftp
