#include "sftp/wire.hpp"

#include <cstdio>
#include <cstdlib>
#include <limits>

namespace sftpfs::sftp {

namespace {

// A field longer than the wire can describe is a bug in the caller (nothing we send comes close to
// 4 GiB); sending a corrupt length would desynchronise the whole session, so stop instead.
void require_fits_u32(size_t n) {
  if (n > std::numeric_limits<uint32_t>::max()) {
    std::fputs("sftpfs: SFTP field longer than 4 GiB\n", stderr);
    std::abort();
  }
}

}  // namespace

Writer::Writer(uint8_t packet_type, size_t reserve) {
  buf_.reserve(reserve + 5);
  buf_.resize(4);  // length, patched by finish()
  buf_.push_back(packet_type);
}

Writer& Writer::u8(uint8_t v) {
  buf_.push_back(v);
  return *this;
}

Writer& Writer::u32(uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) buf_.push_back(static_cast<uint8_t>(v >> shift));
  return *this;
}

Writer& Writer::u64(uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) buf_.push_back(static_cast<uint8_t>(v >> shift));
  return *this;
}

Writer& Writer::string(std::string_view s) {
  return string(ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

Writer& Writer::string(ByteView s) {
  require_fits_u32(s.size());
  u32(static_cast<uint32_t>(s.size()));
  return raw(s);
}

Writer& Writer::raw(ByteView bytes) {
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  return *this;
}

Writer& Writer::attrs(const Attrs& a) {
  const uint32_t flags = a.flags & kKnownAttrFlags;
  u32(flags);
  if (flags & SSH_FILEXFER_ATTR_SIZE) u64(a.size);
  if (flags & SSH_FILEXFER_ATTR_UIDGID) u32(a.uid).u32(a.gid);
  if (flags & SSH_FILEXFER_ATTR_PERMISSIONS) u32(a.permissions);
  if (flags & SSH_FILEXFER_ATTR_ACMODTIME) u32(a.atime).u32(a.mtime);
  if (flags & SSH_FILEXFER_ATTR_EXTENDED) {
    require_fits_u32(a.extended.size());
    u32(static_cast<uint32_t>(a.extended.size()));
    for (const auto& [type, data] : a.extended) string(type).string(data);
  }
  return *this;
}

Writer& Writer::u32_list(std::span<const uint32_t> values) {
  require_fits_u32(values.size() * 4);
  u32(static_cast<uint32_t>(values.size() * 4));
  for (uint32_t v : values) u32(v);
  return *this;
}

Bytes Writer::finish() {
  const size_t body = buf_.size() - 4;
  require_fits_u32(body);
  const auto len = static_cast<uint32_t>(body);
  buf_[0] = static_cast<uint8_t>(len >> 24);
  buf_[1] = static_cast<uint8_t>(len >> 16);
  buf_[2] = static_cast<uint8_t>(len >> 8);
  buf_[3] = static_cast<uint8_t>(len);
  Bytes packet = std::move(buf_);
  buf_.clear();
  return packet;
}

Status Reader::need(size_t n, std::string_view what) const {
  if (n > remaining()) {
    return Error::protocol_error("SFTP packet truncated: " + std::string(what) + " needs " + std::to_string(n) +
                                 " bytes at offset " + std::to_string(pos_) + ", " +
                                 std::to_string(remaining()) + " left");
  }
  return {};
}

Result<uint8_t> Reader::u8() {
  SFTPFS_RETURN_IF_ERROR(need(1, "byte"));
  return data_[pos_++];
}

Result<uint32_t> Reader::u32() {
  SFTPFS_RETURN_IF_ERROR(need(4, "uint32"));
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | data_[pos_ + i];
  pos_ += 4;
  return v;
}

Result<uint64_t> Reader::u64() {
  SFTPFS_RETURN_IF_ERROR(need(8, "uint64"));
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | data_[pos_ + i];
  pos_ += 8;
  return v;
}

Result<ByteView> Reader::string_bytes() {
  SFTPFS_ASSIGN_OR_RETURN(const uint32_t len, u32());
  SFTPFS_RETURN_IF_ERROR(need(len, "string body"));
  ByteView s = data_.subspan(pos_, len);
  pos_ += len;
  return s;
}

Result<std::string> Reader::string() {
  SFTPFS_ASSIGN_OR_RETURN(const ByteView s, string_bytes());
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

ByteView Reader::rest() {
  ByteView r = data_.subspan(pos_);
  pos_ = data_.size();
  return r;
}

Result<uint32_t> Reader::count(size_t min_element_size) {
  SFTPFS_ASSIGN_OR_RETURN(const uint32_t n, u32());
  // Division, not multiplication: cannot overflow.
  if (min_element_size != 0 && n > remaining() / min_element_size) {
    return Error::protocol_error("SFTP packet claims " + std::to_string(n) + " elements but has only " +
                                 std::to_string(remaining()) + " bytes left");
  }
  return n;
}

Result<Attrs> Reader::attrs() {
  Attrs a;
  SFTPFS_ASSIGN_OR_RETURN(a.flags, u32());
  if ((a.flags & ~kKnownAttrFlags) != 0) {
    // A v3 ATTRS has no length: with a flag we do not know, we cannot tell where the fields end.
    return Error::protocol_error("SFTP ATTRS with unknown flag bits " + std::to_string(a.flags & ~kKnownAttrFlags));
  }
  if (a.has(SSH_FILEXFER_ATTR_SIZE)) {
    SFTPFS_ASSIGN_OR_RETURN(a.size, u64());
  }
  if (a.has(SSH_FILEXFER_ATTR_UIDGID)) {
    SFTPFS_ASSIGN_OR_RETURN(a.uid, u32());
    SFTPFS_ASSIGN_OR_RETURN(a.gid, u32());
  }
  if (a.has(SSH_FILEXFER_ATTR_PERMISSIONS)) {
    SFTPFS_ASSIGN_OR_RETURN(a.permissions, u32());
  }
  if (a.has(SSH_FILEXFER_ATTR_ACMODTIME)) {
    SFTPFS_ASSIGN_OR_RETURN(a.atime, u32());
    SFTPFS_ASSIGN_OR_RETURN(a.mtime, u32());
  }
  if (a.has(SSH_FILEXFER_ATTR_EXTENDED)) {
    SFTPFS_ASSIGN_OR_RETURN(const uint32_t n, count(kMinExtensionPairSize));
    a.extended.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      SFTPFS_ASSIGN_OR_RETURN(std::string type, string());
      SFTPFS_ASSIGN_OR_RETURN(std::string data, string());
      a.extended.emplace_back(std::move(type), std::move(data));
    }
  }
  return a;
}

Status Reader::expect_end(std::string_view what) const {
  if (!at_end()) {
    return Error::protocol_error("SFTP " + std::string(what) + " has " + std::to_string(remaining()) +
                                 " unexpected trailing bytes");
  }
  return {};
}

}  // namespace sftpfs::sftp
