// bcrypt_pbkdf (Ted Unangst's construction, used by OpenSSH since 6.5): PBKDF2-like iteration over
// "bcrypt_hash", which is Eksblowfish keyed by SHA-512 digests encrypting a fixed 32-byte text.
//
// Blowfish's initial P-array and S-boxes are the hexadecimal digits of pi's fractional part; rather
// than carrying a 4 KiB table they are computed once here with OpenSSL bignums (Machin's formula).
#include "ssh/bcrypt_pbkdf.hpp"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <cstring>
#include <memory>
#include <vector>

namespace sftpfs::ssh::detail {

namespace {

constexpr size_t kPWords = 18;
constexpr size_t kSWords = 4 * 256;

struct BlowfishState {
  std::array<uint32_t, kPWords> p;
  std::array<std::array<uint32_t, 256>, 4> s;
};

struct BnDeleter {
  void operator()(BIGNUM* bn) const { BN_free(bn); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

// floor(2^bits * atan(1/x)) (within a few units in the last place) by the alternating series.
BnPtr arctan_inverse(BN_ULONG x, int bits) {
  BnPtr sum(BN_new()), term(BN_new()), part(BN_new());
  BN_one(term.get());
  BN_lshift(term.get(), term.get(), bits);
  BN_div_word(term.get(), x);  // 2^bits / x
  BN_copy(sum.get(), term.get());
  const BN_ULONG x2 = x * x;
  for (BN_ULONG k = 1; !BN_is_zero(term.get()); ++k) {
    BN_div_word(term.get(), x2);
    BN_copy(part.get(), term.get());
    BN_div_word(part.get(), 2 * k + 1);
    if (k & 1) BN_sub(sum.get(), sum.get(), part.get());
    else BN_add(sum.get(), sum.get(), part.get());
  }
  return sum;
}

BlowfishState compute_initial_state() {
  constexpr int kWords = kPWords + kSWords;
  constexpr int kGuard = 64;
  constexpr int kBits = kWords * 32 + kGuard;
  // pi = 16 atan(1/5) - 4 atan(1/239)
  BnPtr a = arctan_inverse(5, kBits);
  BnPtr b = arctan_inverse(239, kBits);
  BN_mul_word(a.get(), 16);
  BN_mul_word(b.get(), 4);
  BnPtr pi(BN_new());
  BN_sub(pi.get(), a.get(), b.get());
  BN_rshift(pi.get(), pi.get(), kGuard);  // pi * 2^(kWords*32)
  BN_mask_bits(pi.get(), kWords * 32);    // drop the integer part 3
  std::vector<uint8_t> bytes(kWords * 4);
  BN_bn2binpad(pi.get(), bytes.data(), static_cast<int>(bytes.size()));
  auto word = [&](size_t i) {
    return (uint32_t{bytes[4 * i]} << 24) | (uint32_t{bytes[4 * i + 1]} << 16) | (uint32_t{bytes[4 * i + 2]} << 8) |
           uint32_t{bytes[4 * i + 3]};
  };
  BlowfishState st{};
  for (size_t i = 0; i < kPWords; ++i) st.p[i] = word(i);
  for (size_t i = 0; i < kSWords; ++i) st.s[i / 256][i % 256] = word(kPWords + i);
  return st;
}

const BlowfishState& initial_state() {
  static const BlowfishState state = compute_initial_state();
  return state;
}

inline uint32_t feistel(const BlowfishState& c, uint32_t x) {
  return ((c.s[0][x >> 24] + c.s[1][(x >> 16) & 0xff]) ^ c.s[2][(x >> 8) & 0xff]) + c.s[3][x & 0xff];
}

void encipher(const BlowfishState& c, uint32_t& left, uint32_t& right) {
  uint32_t l = left, r = right;
  l ^= c.p[0];
  for (size_t i = 1; i <= 16; i += 2) {
    r ^= feistel(c, l) ^ c.p[i];
    l ^= feistel(c, r) ^ c.p[i + 1];
  }
  r ^= c.p[17];
  left = r;
  right = l;
}

// Next 32-bit big-endian word from `data`, cycling.
uint32_t stream_word(const uint8_t* data, size_t len, size_t& pos) {
  uint32_t w = 0;
  for (int i = 0; i < 4; ++i) {
    if (pos >= len) pos = 0;
    w = (w << 8) | data[pos++];
  }
  return w;
}

void rekey_from_data(BlowfishState& c, const uint8_t* data, size_t data_len, bool use_data) {
  uint32_t l = 0, r = 0;
  size_t pos = 0;
  auto step = [&](uint32_t& out_l, uint32_t& out_r) {
    if (use_data) {
      l ^= stream_word(data, data_len, pos);
      r ^= stream_word(data, data_len, pos);
    }
    encipher(c, l, r);
    out_l = l;
    out_r = r;
  };
  for (size_t i = 0; i < kPWords; i += 2) step(c.p[i], c.p[i + 1]);
  for (auto& box : c.s) {
    for (size_t k = 0; k < 256; k += 2) step(box[k], box[k + 1]);
  }
}

void xor_key_into_p(BlowfishState& c, const uint8_t* key, size_t key_len) {
  size_t pos = 0;
  for (auto& p : c.p) p ^= stream_word(key, key_len, pos);
}

// Eksblowfish setup with the salt as data, then 64 rounds alternating salt and password.
void bcrypt_hash(const uint8_t* sha2pass, const uint8_t* sha2salt, uint8_t out[32]) {
  BlowfishState c = initial_state();
  xor_key_into_p(c, sha2pass, 64);
  rekey_from_data(c, sha2salt, 64, true);
  for (int i = 0; i < 64; ++i) {
    xor_key_into_p(c, sha2salt, 64);
    rekey_from_data(c, nullptr, 0, false);
    xor_key_into_p(c, sha2pass, 64);
    rekey_from_data(c, nullptr, 0, false);
  }
  static const char kText[] = "OxychromaticBlowfishSwatDynamite";
  uint32_t cdata[8];
  size_t pos = 0;
  for (auto& w : cdata) w = stream_word(reinterpret_cast<const uint8_t*>(kText), 32, pos);
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < 8; j += 2) encipher(c, cdata[j], cdata[j + 1]);
  }
  for (int i = 0; i < 8; ++i) {  // little-endian words, as the reference does
    out[4 * i + 3] = static_cast<uint8_t>(cdata[i] >> 24);
    out[4 * i + 2] = static_cast<uint8_t>(cdata[i] >> 16);
    out[4 * i + 1] = static_cast<uint8_t>(cdata[i] >> 8);
    out[4 * i + 0] = static_cast<uint8_t>(cdata[i]);
  }
  OPENSSL_cleanse(&c, sizeof c);
}

}  // namespace

bool bcrypt_pbkdf(std::string_view passphrase, const uint8_t* salt, size_t salt_len, uint8_t* key, size_t key_len,
                  unsigned rounds) {
  constexpr size_t kHashLen = 32;
  if (rounds < 1 || key_len == 0 || key_len > kHashLen * kHashLen || salt_len == 0 || salt_len > (1u << 20)) {
    return false;
  }
  const size_t stride = (key_len + kHashLen - 1) / kHashLen;
  size_t amount = (key_len + stride - 1) / stride;
  uint8_t sha2pass[64];
  SHA512(reinterpret_cast<const uint8_t*>(passphrase.data()), passphrase.size(), sha2pass);
  std::vector<uint8_t> count_salt(salt, salt + salt_len);
  count_salt.resize(salt_len + 4);
  size_t remaining = key_len;
  for (uint32_t count = 1; remaining > 0; ++count) {
    count_salt[salt_len + 0] = static_cast<uint8_t>(count >> 24);
    count_salt[salt_len + 1] = static_cast<uint8_t>(count >> 16);
    count_salt[salt_len + 2] = static_cast<uint8_t>(count >> 8);
    count_salt[salt_len + 3] = static_cast<uint8_t>(count);
    uint8_t sha2salt[64], tmp[kHashLen], out[kHashLen];
    SHA512(count_salt.data(), count_salt.size(), sha2salt);
    bcrypt_hash(sha2pass, sha2salt, tmp);
    std::memcpy(out, tmp, sizeof out);
    for (unsigned r = 1; r < rounds; ++r) {
      SHA512(tmp, sizeof tmp, sha2salt);
      bcrypt_hash(sha2pass, sha2salt, tmp);
      for (size_t j = 0; j < kHashLen; ++j) out[j] ^= tmp[j];
    }
    if (amount > remaining) amount = remaining;
    size_t i = 0;
    for (; i < amount; ++i) {
      size_t dest = i * stride + (count - 1);
      if (dest >= key_len) break;
      key[dest] = out[i];
    }
    remaining -= i;
    OPENSSL_cleanse(out, sizeof out);
    OPENSSL_cleanse(tmp, sizeof tmp);
  }
  OPENSSL_cleanse(sha2pass, sizeof sha2pass);
  return true;
}

}  // namespace sftpfs::ssh::detail
