#include "cli/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "util/log.hpp"

namespace sftpfs::cli {

bool notify_systemd(std::string_view state) {
  const char* value = std::getenv("NOTIFY_SOCKET");
  if (!value || !*value) return false;
  const std::string path = value;
  unsetenv("NOTIFY_SOCKET");
  sockaddr_un address{};
  if ((path[0] != '/' && path[0] != '@') || path.size() >= sizeof address.sun_path) {
    LOG_WARN("NOTIFY_SOCKET=%s is not a socket path; systemd is not told that the mount is ready", path.c_str());
    return false;
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  if (path[0] == '@') address.sun_path[0] = '\0';  // the abstract namespace: no trailing NUL counted
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&address), length);
  int err = errno;
  ::close(fd);
  if (sent != static_cast<ssize_t>(state.size())) {
    LOG_WARN("cannot tell systemd that the mount is ready (NOTIFY_SOCKET=%s): %s", path.c_str(), std::strerror(err));
    return false;
  }
  return true;
}

}  // namespace sftpfs::cli
