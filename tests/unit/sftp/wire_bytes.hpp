// Test-only byte assembly, written independently of sftp::Writer so the tests check the codec against a
// second, obviously simple encoder rather than against itself.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "sftp/protocol.hpp"

namespace sftpfs::sftp::testing {

class Bytes8 {
 public:
  Bytes8& u8(uint8_t v) { b_.push_back(v); return *this; }
  Bytes8& u32(uint32_t v) {
    b_.push_back(uint8_t(v >> 24)); b_.push_back(uint8_t(v >> 16)); b_.push_back(uint8_t(v >> 8)); b_.push_back(uint8_t(v));
    return *this;
  }
  Bytes8& u64(uint64_t v) { return u32(uint32_t(v >> 32)).u32(uint32_t(v)); }
  Bytes8& str(std::string_view s) { u32(uint32_t(s.size())); b_.insert(b_.end(), s.begin(), s.end()); return *this; }
  Bytes8& raw(const Bytes& r) { b_.insert(b_.end(), r.begin(), r.end()); return *this; }
  const Bytes& bytes() const { return b_; }
  // The same bytes with a uint32 length in front: a whole packet as builders return it.
  Bytes framed() const {
    Bytes8 f;
    f.u32(uint32_t(b_.size())).raw(b_);
    return f.bytes();
  }

 private:
  Bytes b_;
};

inline ByteView view(const Bytes& b) { return ByteView(b.data(), b.size()); }

}  // namespace sftpfs::sftp::testing
