#include "ssh/private_key.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "ssh/bcrypt_pbkdf.hpp"
#include "ssh/internal.hpp"

namespace sftpfs::ssh::detail {

namespace {

constexpr const char kOpensshBegin[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
constexpr const char kOpensshEnd[] = "-----END OPENSSH PRIVATE KEY-----";
constexpr const char kOpensshMagic[] = "openssh-key-v1";  // followed by a NUL

// Secret bytes wiped when dropped.
struct SecretBytes {
  std::vector<uint8_t> bytes;
  ~SecretBytes() {
    if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
  }
};

// Bounds-checked SSH wire reader over untrusted bytes.
class Reader {
 public:
  Reader(const uint8_t* data, size_t len) : p_(data), end_(data + len) {}
  bool u32(uint32_t& v) {
    if (end_ - p_ < 4) return false;
    v = (uint32_t{p_[0]} << 24) | (uint32_t{p_[1]} << 16) | (uint32_t{p_[2]} << 8) | uint32_t{p_[3]};
    p_ += 4;
    return true;
  }
  bool string(const uint8_t*& data, size_t& len) {
    uint32_t n;
    if (!u32(n) || static_cast<size_t>(end_ - p_) < n) return false;
    data = p_;
    len = n;
    p_ += n;
    return true;
  }
  bool string(std::string& s) {
    const uint8_t* d;
    size_t n;
    if (!string(d, n)) return false;
    s.assign(reinterpret_cast<const char*>(d), n);
    return true;
  }
  bool bytes(size_t n, const uint8_t*& data) {
    if (static_cast<size_t>(end_ - p_) < n) return false;
    data = p_;
    p_ += n;
    return true;
  }
  size_t left() const { return static_cast<size_t>(end_ - p_); }
  const uint8_t* pos() const { return p_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
void put_string(std::vector<uint8_t>& out, const uint8_t* data, size_t len) {
  put_u32(out, static_cast<uint32_t>(len));
  out.insert(out.end(), data, data + len);
}
void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put_string(out, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
void put_mpint(std::vector<uint8_t>& out, const BIGNUM* bn) {
  std::vector<uint8_t> mag(static_cast<size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, mag.data());
  if (!mag.empty() && (mag[0] & 0x80)) mag.insert(mag.begin(), 0);
  put_string(out, mag.data(), mag.size());
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::errno_error(errno ? errno : ENOENT, "cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > (1u << 20)) return Error::errno_error(EFBIG, path + " is too large to be a private key");
  return text;
}

// The decoded "openssh-key-v1" structure, private part still encrypted.
struct OpensshKey {
  std::vector<uint8_t> blob;  // the whole decoded file; the pointers below point into it
  std::string cipher, kdf;
  const uint8_t* kdf_options = nullptr;
  size_t kdf_options_len = 0;
  std::string key_type;  // from the first public key
  const uint8_t* secret = nullptr;
  size_t secret_len = 0;
};

std::optional<OpensshKey> parse_openssh(const std::string& text) {
  size_t begin = text.find(kOpensshBegin);
  size_t end = text.find(kOpensshEnd);
  if (begin == std::string::npos || end == std::string::npos || end < begin) return std::nullopt;
  begin += sizeof(kOpensshBegin) - 1;
  auto decoded = base64_decode(std::string_view(text).substr(begin, end - begin));
  if (!decoded) return std::nullopt;
  OpensshKey key;
  key.blob = std::move(*decoded);
  if (key.blob.size() < sizeof(kOpensshMagic) ||
      std::memcmp(key.blob.data(), kOpensshMagic, sizeof(kOpensshMagic)) != 0) {
    return std::nullopt;
  }
  Reader r(key.blob.data() + sizeof(kOpensshMagic), key.blob.size() - sizeof(kOpensshMagic));
  uint32_t count = 0;
  const uint8_t* pub;
  size_t pub_len;
  if (!r.string(key.cipher) || !r.string(key.kdf) || !r.string(key.kdf_options, key.kdf_options_len) ||
      !r.u32(count) || count < 1 || !r.string(pub, pub_len)) {
    return std::nullopt;
  }
  Reader pr(pub, pub_len);
  if (!pr.string(key.key_type)) return std::nullopt;
  for (uint32_t i = 1; i < count; ++i) {
    if (!r.string(pub, pub_len)) return std::nullopt;
  }
  if (!r.string(key.secret, key.secret_len)) return std::nullopt;
  return key;
}

struct CipherSpec {
  const char* name;
  const EVP_CIPHER* (*cipher)();
  size_t key_len, iv_len, block;
};
constexpr CipherSpec kCiphers[] = {
    {"aes256-ctr", EVP_aes_256_ctr, 32, 16, 16}, {"aes192-ctr", EVP_aes_192_ctr, 24, 16, 16},
    {"aes128-ctr", EVP_aes_128_ctr, 16, 16, 16}, {"aes256-cbc", EVP_aes_256_cbc, 32, 16, 16},
    {"aes192-cbc", EVP_aes_192_cbc, 24, 16, 16}, {"aes128-cbc", EVP_aes_128_cbc, 16, 16, 16},
};

enum class Decrypt { ok, wrong_passphrase, unsupported, malformed };

// Decrypts the private section and checks its two check words (equal only with the right passphrase).
Decrypt decrypt_openssh(const OpensshKey& key, const std::string& passphrase, SecretBytes& plain) {
  if (key.cipher == "none") {
    plain.bytes.assign(key.secret, key.secret + key.secret_len);
  } else {
    const CipherSpec* spec = nullptr;
    for (const auto& c : kCiphers) {
      if (key.cipher == c.name) spec = &c;
    }
    if (!spec || key.kdf != "bcrypt") return Decrypt::unsupported;
    Reader kr(key.kdf_options, key.kdf_options_len);
    const uint8_t* salt;
    size_t salt_len;
    uint32_t rounds;
    if (!kr.string(salt, salt_len) || !kr.u32(rounds) || rounds == 0 || rounds > 1000000) return Decrypt::malformed;
    if (key.secret_len % spec->block != 0) return Decrypt::malformed;
    if (passphrase.empty()) return Decrypt::wrong_passphrase;
    SecretBytes derived;
    derived.bytes.resize(spec->key_len + spec->iv_len);
    if (!bcrypt_pbkdf(passphrase, salt, salt_len, derived.bytes.data(), derived.bytes.size(), rounds)) {
      return Decrypt::malformed;
    }
    std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
    plain.bytes.resize(key.secret_len + spec->block);
    int n1 = 0, n2 = 0;
    if (!ctx || EVP_DecryptInit_ex(ctx.get(), spec->cipher(), nullptr, derived.bytes.data(),
                                   derived.bytes.data() + spec->key_len) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx.get(), 0) != 1 ||
        EVP_DecryptUpdate(ctx.get(), plain.bytes.data(), &n1, key.secret, static_cast<int>(key.secret_len)) != 1 ||
        EVP_DecryptFinal_ex(ctx.get(), plain.bytes.data() + n1, &n2) != 1) {
      return Decrypt::malformed;
    }
    plain.bytes.resize(static_cast<size_t>(n1 + n2));
  }
  Reader r(plain.bytes.data(), plain.bytes.size());
  uint32_t check1, check2;
  if (!r.u32(check1) || !r.u32(check2)) return Decrypt::malformed;
  if (check1 != check2) return key.cipher == "none" ? Decrypt::malformed : Decrypt::wrong_passphrase;
  return Decrypt::ok;
}

struct BnDeleter {
  void operator()(BIGNUM* bn) const { BN_clear_free(bn); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

BnPtr read_mpint(Reader& r) {
  const uint8_t* d;
  size_t n;
  if (!r.string(d, n) || n > 2048) return nullptr;
  return BnPtr(BN_bin2bn(d, static_cast<int>(n), nullptr));
}

// Private section after the check words: string type, mpint n, e, d, iqmp, p, q, string comment.
Result<RsaKey> rsa_from_openssh_private(const SecretBytes& plain) {
  Reader r(plain.bytes.data() + 8, plain.bytes.size() - 8);
  std::string type;
  if (!r.string(type) || type != "ssh-rsa") return Error::not_supported("the first key in the file is not RSA");
  BnPtr n = read_mpint(r), e = read_mpint(r), d = read_mpint(r), iqmp = read_mpint(r), p = read_mpint(r),
        q = read_mpint(r);
  if (!n || !e || !d || !iqmp || !p || !q) return Error::protocol_error("malformed OpenSSH RSA private key");
  std::unique_ptr<BN_CTX, decltype(&BN_CTX_free)> ctx(BN_CTX_new(), &BN_CTX_free);
  BnPtr p1(BN_new()), q1(BN_new()), dmp1(BN_new()), dmq1(BN_new());
  if (!ctx || !p1 || !q1 || !dmp1 || !dmq1 || !BN_sub(p1.get(), p.get(), BN_value_one()) ||
      !BN_sub(q1.get(), q.get(), BN_value_one()) || !BN_mod(dmp1.get(), d.get(), p1.get(), ctx.get()) ||
      !BN_mod(dmq1.get(), d.get(), q1.get(), ctx.get())) {
    return Error::errno_error(ENOMEM, "RSA key arithmetic failed");
  }
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(), &OSSL_PARAM_BLD_free);
  if (!bld || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_D, d.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_FACTOR1, p.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_FACTOR2, q.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1, dmp1.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2, dmq1.get()) ||
      !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1, iqmp.get())) {
    return Error::errno_error(ENOMEM, "cannot build RSA key parameters");
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()), &OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> pctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr),
                                                                   &EVP_PKEY_CTX_free);
  EVP_PKEY* pkey = nullptr;
  if (!params || !pctx || EVP_PKEY_fromdata_init(pctx.get()) != 1 ||
      EVP_PKEY_fromdata(pctx.get(), &pkey, EVP_PKEY_KEYPAIR, params.get()) != 1) {
    return Error::protocol_error("OpenSSL rejected the RSA key parameters");
  }
  RsaKey key;
  key.key.reset(pkey);
  return key;
}

bool pem_is_encrypted(const std::string& text) {
  return text.find("BEGIN ENCRYPTED PRIVATE KEY") != std::string::npos ||
         text.find("Proc-Type: 4,ENCRYPTED") != std::string::npos;
}

// PEM via OpenSSL; nullptr with *wrong_passphrase set when decryption failed.
PkeyPtr read_pem(const std::string& text, const std::string& passphrase, bool* wrong_passphrase) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())),
                                                &BIO_free);
  ERR_clear_error();
  // With no callback, OpenSSL takes `u` as the NUL-terminated passphrase.
  EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, const_cast<char*>(passphrase.c_str()))
                      : nullptr;
  *wrong_passphrase = !key && pem_is_encrypted(text);
  ERR_clear_error();
  return PkeyPtr(key);
}

// Names the formats people hand to IdentityFile that are not private keys sftpfs can read, with the
// command that converts them.
std::string unreadable_key_message(const std::string& path, const std::string& text) {
  if (text.find("---- BEGIN SSH2 PUBLIC KEY ----") != std::string::npos)
    return path + " is a public key in SSH2 (RFC 4716) format, not a private key: IdentityFile needs the private "
                  "key file (ssh-keygen -i -f " + path + " prints this public key in OpenSSH's format)";
  if (text.find("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----") != std::string::npos)
    return path + " is an SSH2 (ssh.com) private key, which libssh2 cannot read; convert it with: ssh-keygen -i -f " +
           path + " > " + path + ".openssh (remove its passphrase first, if it has one)";
  if (text.rfind("PuTTY-User-Key-File-", 0) == 0)
    return path + " is a PuTTY private key (.ppk), which libssh2 cannot read; convert it with: puttygen " + path +
           " -O private-openssh -o " + path + ".openssh";
  // "ssh-ed25519 AAAA... comment": an OpenSSH public key line.
  size_t space = text.find(' ');
  std::string_view first = std::string_view(text).substr(0, space);
  if (space != std::string::npos && text.compare(space + 1, 4, "AAAA") == 0 &&
      (first.rfind("ssh-", 0) == 0 || first.rfind("ecdsa-", 0) == 0 || first.rfind("sk-", 0) == 0)) {
    std::string private_path = path.size() > 4 && path.compare(path.size() - 4, 4, ".pub") == 0
                                   ? path.substr(0, path.size() - 4)
                                   : "the private key";
    return path + " is an OpenSSH public key (" + std::string(first) +
           "), not a private key: IdentityFile needs the private key (" + private_path + ")";
  }
  return path + " does not look like a private key (sftpfs reads OpenSSH and PEM private keys)";
}

}  // namespace

Result<KeyFileInfo> inspect_key_file(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.take_error();
  KeyFileInfo info;
  if (text->find(kOpensshBegin) != std::string::npos) {
    auto key = parse_openssh(*text);
    if (!key) return Error::protocol_error(path + " is not a valid OpenSSH private key");
    info.format = KeyFileInfo::Format::openssh;
    info.encrypted = key->cipher != "none";
    info.key_type = key->key_type;
    if (info.key_type.rfind("sk-", 0) == 0)
      return Error::not_supported(path + " is a FIDO security-key key (" + info.key_type +
                                  "), which libssh2 1.10 cannot use; use an ed25519 or ecdsa key without -sk");
    return info;
  }
  if (text->find("-----BEGIN ") != std::string::npos && text->find("PRIVATE KEY-----") != std::string::npos) {
    info.format = KeyFileInfo::Format::pem;
    info.encrypted = pem_is_encrypted(*text);
    if (text->find("BEGIN RSA PRIVATE KEY") != std::string::npos) info.key_type = "ssh-rsa";
    else if (text->find("BEGIN EC PRIVATE KEY") != std::string::npos) info.key_type = "ecdsa";
    else if (text->find("BEGIN DSA PRIVATE KEY") != std::string::npos) info.key_type = "ssh-dss";
    else if (!info.encrypted) {
      bool wrong = false;
      if (PkeyPtr key = read_pem(*text, "", &wrong)) {
        if (EVP_PKEY_is_a(key.get(), "RSA")) info.key_type = "ssh-rsa";
        else if (EVP_PKEY_is_a(key.get(), "ED25519")) info.key_type = "ssh-ed25519";
        else if (EVP_PKEY_is_a(key.get(), "EC")) info.key_type = "ecdsa";
      }
    }
    return info;
  }
  return Error::protocol_error(unreadable_key_message(path, *text));
}

PassphraseVerdict check_passphrase(const std::string& path, const KeyFileInfo& info, const std::string& passphrase) {
  auto text = read_file(path);
  if (!text) return PassphraseVerdict::cannot_tell;
  if (info.format == KeyFileInfo::Format::openssh) {
    auto key = parse_openssh(*text);
    if (!key) return PassphraseVerdict::cannot_tell;
    SecretBytes plain;
    switch (decrypt_openssh(*key, passphrase, plain)) {
      case Decrypt::ok: return PassphraseVerdict::correct;
      case Decrypt::wrong_passphrase: return PassphraseVerdict::wrong;
      default: return PassphraseVerdict::cannot_tell;
    }
  }
  if (info.format == KeyFileInfo::Format::pem) {
    bool wrong = false;
    PkeyPtr key = read_pem(*text, passphrase, &wrong);
    if (key) return PassphraseVerdict::correct;
    return wrong ? PassphraseVerdict::wrong : PassphraseVerdict::cannot_tell;
  }
  return PassphraseVerdict::cannot_tell;
}

Result<RsaKey> load_rsa_key(const std::string& path, const std::string& passphrase) {
  auto text = read_file(path);
  if (!text) return text.take_error();
  if (text->find(kOpensshBegin) != std::string::npos) {
    auto key = parse_openssh(*text);
    if (!key) return Error::protocol_error(path + " is not a valid OpenSSH private key");
    SecretBytes plain;
    switch (decrypt_openssh(*key, passphrase, plain)) {
      case Decrypt::ok: return rsa_from_openssh_private(plain);
      case Decrypt::wrong_passphrase: return Error{Error::Kind::auth, 1, "incorrect passphrase for " + path};
      case Decrypt::unsupported:
        return Error::not_supported(path + " is encrypted with " + key->cipher + "/" + key->kdf +
                                    ", which sftpfs cannot read; convert it with: ssh-keygen -p -m PEM -f " + path);
      case Decrypt::malformed: return Error::protocol_error(path + " is a malformed OpenSSH private key");
    }
  }
  bool wrong = false;
  PkeyPtr key = read_pem(*text, passphrase, &wrong);
  if (!key) {
    if (wrong) return Error{Error::Kind::auth, 1, "incorrect passphrase for " + path};
    return Error::protocol_error("OpenSSL cannot read the private key " + path);
  }
  if (!EVP_PKEY_is_a(key.get(), "RSA")) return Error::not_supported(path + " is not an RSA key");
  RsaKey rsa;
  rsa.key = std::move(key);
  return rsa;
}

std::vector<uint8_t> RsaKey::public_blob(const std::string& type_name) const {
  std::vector<uint8_t> out;
  BIGNUM* n = nullptr;
  BIGNUM* e = nullptr;
  if (EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_N, &n) != 1 ||
      EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
    BN_free(n);
    BN_free(e);
    return out;
  }
  put_string(out, type_name);
  put_mpint(out, e);
  put_mpint(out, n);
  BN_free(n);
  BN_free(e);
  return out;
}

std::optional<std::vector<uint8_t>> RsaKey::sign_sha256(const uint8_t* data, size_t len) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  size_t sig_len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len, data, len) != 1) {
    return std::nullopt;
  }
  std::vector<uint8_t> sig(sig_len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &sig_len, data, len) != 1) return std::nullopt;
  sig.resize(sig_len);
  return sig;
}

}  // namespace sftpfs::ssh::detail
