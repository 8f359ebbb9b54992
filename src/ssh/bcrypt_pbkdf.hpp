// bcrypt_pbkdf, the KDF of OpenSSH-format private keys ("openssh-key-v1", kdfname "bcrypt").
// OpenSSL lacks it and libssh2 does not export its copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sftpfs::ssh::detail {

// Fills out[0..out_len) from the passphrase and salt; false on invalid arguments.
bool bcrypt_pbkdf(std::string_view passphrase, const uint8_t* salt, size_t salt_len, uint8_t* out, size_t out_len,
                  unsigned rounds);

}  // namespace sftpfs::ssh::detail
