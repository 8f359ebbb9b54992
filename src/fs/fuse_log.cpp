#include "fs/fuse_log.hpp"

#include <cstdarg>
#include <cstdio>

#include "fs/fuse_api.hpp"
#include "util/log.hpp"

namespace sftpfs::fs {

std::string reword_fuse_debug_line(std::string_view line) {
  // libfuse 3: "   unique: 10, error: -38 (Function not implemented), outsize: 16"
  constexpr std::string_view kMarker = ", error: -";
  size_t at = line.find(kMarker);
  if (line.find("unique: ") == std::string_view::npos || at == std::string_view::npos) return std::string(line);
  return std::string(line.substr(0, at)) + ", errno " + std::string(line.substr(at + kMarker.size()));
}

namespace {

void handle(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buffer[2048];
  std::vsnprintf(buffer, sizeof buffer, fmt, ap);
  std::string_view text(buffer);
  if (level <= FUSE_LOG_ERR) {
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    LOG_ERROR("libfuse: %.*s", static_cast<int>(text.size()), text.data());
    return;
  }
  // Requests and replies (-d): as libfuse prints them, on stderr.
  std::string out = reword_fuse_debug_line(text);
  std::fputs(out.c_str(), stderr);
}

}  // namespace

void route_fuse_log() { fuse_set_log_func(handle); }

}  // namespace sftpfs::fs
