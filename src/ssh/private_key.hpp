// Private key files as this layer needs them: what a file holds (type, format, encrypted?), whether a
// passphrase opens it, and RSA keys loaded for our own rsa-sha2-256 signing (libssh2 1.10 signs RSA
// only with SHA-1, which OpenSSH >= 8.8 refuses).
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/result.hpp"

namespace sftpfs::ssh::detail {

struct KeyFileInfo {
  enum class Format { pem, openssh, unknown };
  Format format = Format::unknown;
  bool encrypted = false;
  std::string key_type;  // "ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", ...; empty when unknown
  bool is_rsa() const { return key_type == "ssh-rsa"; }
};

// Reads and classifies a key file. Errors: cannot read, not a private key.
Result<KeyFileInfo> inspect_key_file(const std::string& path);

enum class PassphraseVerdict { correct, wrong, cannot_tell };
// Tries the passphrase locally (no network), so a typo is told apart from a key the server refuses.
PassphraseVerdict check_passphrase(const std::string& path, const KeyFileInfo& info, const std::string& passphrase);

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// An RSA private key and its SSH public key blob.
struct RsaKey {
  PkeyPtr key;
  std::vector<uint8_t> public_blob(const std::string& type_name) const;  // string type, mpint e, mpint n
  // PKCS#1 v1.5 signature over SHA-256(data), raw: libssh2 wraps it as string(algorithm name taken
  // from the public key blob), string(signature).
  std::optional<std::vector<uint8_t>> sign_sha256(const uint8_t* data, size_t len) const;
};

// Loads an RSA key from PEM (PKCS#1/PKCS#8, optionally encrypted) or OpenSSH format (plain or
// bcrypt + aes-ctr/cbc encrypted). A wrong passphrase gives Error::Kind::auth with code 1.
Result<RsaKey> load_rsa_key(const std::string& path, const std::string& passphrase);

}  // namespace sftpfs::ssh::detail
