// One logger for the whole program: levels, stderr in the foreground, syslog once daemonized.
// Secrets (passwords, passphrases, key material) are never passed to it.
#pragma once

#include <cstdarg>
#include <string>

namespace sftpfs::log {

enum class Level { error = 0, warning = 1, info = 2, debug = 3 };

void set_level(Level level);
Level level();
bool enabled(Level level);
// After daemonizing: send messages to syslog (ident "sftpfs") instead of stderr.
void use_syslog(bool on);

void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace sftpfs::log

#define SFTPFS_LOG(lvl, ...)                                                        \
  do {                                                                              \
    if (::sftpfs::log::enabled(::sftpfs::log::Level::lvl)) ::sftpfs::log::write(::sftpfs::log::Level::lvl, __VA_ARGS__); \
  } while (0)
#define LOG_ERROR(...) SFTPFS_LOG(error, __VA_ARGS__)
#define LOG_WARN(...) SFTPFS_LOG(warning, __VA_ARGS__)
#define LOG_INFO(...) SFTPFS_LOG(info, __VA_ARGS__)
#define LOG_DEBUG(...) SFTPFS_LOG(debug, __VA_ARGS__)
