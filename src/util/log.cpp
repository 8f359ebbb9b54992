#include "util/log.hpp"

#include <syslog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace sftpfs::log {
namespace {
std::atomic<int> g_level{static_cast<int>(Level::warning)};
std::atomic<bool> g_syslog{false};
std::mutex g_stderr_mutex;  // keeps lines from different threads whole

int syslog_priority(Level level) {
  switch (level) {
    case Level::error: return LOG_ERR;
    case Level::warning: return LOG_WARNING;
    case Level::info: return LOG_INFO;
    case Level::debug: return LOG_DEBUG;
  }
  return LOG_INFO;
}

const char* level_name(Level level) {
  switch (level) {
    case Level::error: return "error";
    case Level::warning: return "warning";
    case Level::info: return "info";
    case Level::debug: return "debug";
  }
  return "?";
}
}  // namespace

void set_level(Level level) { g_level.store(static_cast<int>(level)); }
Level level() { return static_cast<Level>(g_level.load()); }
bool enabled(Level level) { return static_cast<int>(level) <= g_level.load(); }

void use_syslog(bool on) {
  if (on && !g_syslog.load()) openlog("sftpfs", LOG_PID, LOG_DAEMON);
  g_syslog.store(on);
}

void write(Level level, const char* fmt, ...) {
  char message[2048];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof message, fmt, args);
  va_end(args);
  if (g_syslog.load()) {
    syslog(syslog_priority(level), "%s", message);
    return;
  }
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  struct tm tm_local;
  localtime_r(&t, &tm_local);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%H:%M:%S", &tm_local);
  std::lock_guard<std::mutex> lock(g_stderr_mutex);
  fprintf(stderr, "%s.%03lld sftpfs %s: %s\n", stamp, static_cast<long long>(ms), level_name(level), message);
}

}  // namespace sftpfs::log
