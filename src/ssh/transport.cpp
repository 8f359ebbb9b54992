// TCP connect with a deadline, socket waiting for libssh2, and small shared helpers.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "ssh/internal.hpp"

namespace sftpfs::ssh::detail {

namespace {

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1000000 ? 1000000 : static_cast<int>(left);
}

// Waits are cut into slices this long, so a cancel (unmount during a reconnect) is seen promptly.
constexpr int kCancelSliceMs = 200;
bool cancelled(const std::atomic<bool>* cancel) { return cancel && cancel->load(); }

std::string address_text(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, buf, sizeof buf);
    return std::string("[") + buf + "]";
  }
  inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, buf, sizeof buf);
  return buf;
}

// One attempt on one address; returns the connected fd or sets `why` (and `refused` for ECONNREFUSED).
int connect_one(const addrinfo* ai, Clock::time_point deadline, const std::atomic<bool>* cancel, std::string& why,
                bool& timed_out, bool& refused) {
  int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
  if (fd < 0) {
    why = std::strerror(errno);
    return -1;
  }
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
    refused = errno == ECONNREFUSED;
    why = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  for (;;) {
    pollfd pfd{fd, POLLOUT, 0};
    int ms = std::min(remaining_ms(deadline), kCancelSliceMs);
    int n = ms == 0 || cancelled(cancel) ? 0 : ::poll(&pfd, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 && !cancelled(cancel) && remaining_ms(deadline) > 0) continue;
    if (n <= 0) {
      why = "timed out";
      timed_out = true;
      ::close(fd);
      return -1;
    }
    break;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    refused = err == ECONNREFUSED;
    why = std::strerror(err);
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  return fd;
}

// Text from the network, safe to put in a message: printable ASCII only, at most 80 characters.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 80)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

}  // namespace

Result<int> tcp_connect(const std::string& host, uint16_t port, Clock::time_point deadline,
                        const std::atomic<bool>* cancel) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* list = nullptr;
  std::string port_text = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &list);
  if (rc == EAI_NONAME || rc == EAI_ADDRFAMILY || rc == EAI_FAMILY) {
    // AI_ADDRCONFIG hides ::1 on hosts with only loopback IPv6; retry without it.
    hints.ai_flags = 0;
    rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &list);
  }
  if (rc != 0) {
    return Error::transport_error("cannot resolve host '" + host + "': " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(list, &::freeaddrinfo);
  std::string failures;
  bool timed_out = false;
  bool all_refused = true;  // every address answered "nothing listens on this port"
  for (const addrinfo* ai = list; ai; ai = ai->ai_next) {
    if (Clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    std::string why;
    bool refused = false;
    int fd = connect_one(ai, deadline, cancel, why, timed_out, refused);
    if (fd >= 0) return fd;
    all_refused = all_refused && refused;
    if (!failures.empty()) failures += "; ";
    failures += address_text(ai->ai_addr) + ": " + why;
  }
  std::string target = host + " port " + port_text;
  if (timed_out) {
    return Error::timed_out("connect to " + target + " timed out (" + failures +
                            "); check the host and port, or raise ConnectTimeout");
  }
  if (all_refused && !failures.empty()) {
    return Error::transport_error("cannot connect to " + target + ": " + failures +
                                  "; nothing listens there: is the SSH server running, and is " + port_text +
                                  " the right port? (ssh uses 22)");
  }
  return Error::transport_error("cannot connect to " + target + ": " + failures);
}

std::string handshake_failure(LIBSSH2_SESSION* session, const std::string& target, uint16_t port) {
  // libssh2 skips lines before "SSH-" (RFC 4253 allows them) and keeps the last line it read as the
  // banner: without an "SSH-" line, whatever answered does not speak SSH, or an sshd refused us before
  // its greeting (sshd's MaxStartups drops connections that way).
  const char* banner = libssh2_session_banner_get(session);
  const std::string port_hint = "is " + std::to_string(port) + " the right port? (ssh uses 22)";
  if (!banner || std::strncmp(banner, "SSH-", 4) != 0) {
    std::string sent = banner && *banner ? "its last line was '" + printable(banner) + "'"
                                         : "it closed the connection without a word";
    return "SSH handshake with " + target + " failed: that is not an SSH server (no SSH version line; " + sent +
           "; " + last_error(session) + "), or an sshd dropped the connection (MaxStartups, a firewall, fail2ban); " +
           port_hint;
  }
  if (std::strncmp(banner, "SSH-1.", 6) == 0 && std::strncmp(banner, "SSH-1.99", 8) != 0) {
    return "SSH handshake with " + target + " failed: the server speaks only SSH protocol 1 (it sent '" +
           printable(banner) + "'); sftpfs needs SSH protocol 2";
  }
  return "SSH handshake with " + target + " failed: " + last_error(session);
}

bool IoWaiter::wait_socket() {
  for (;;) {
    int ms = std::min(remaining_ms(deadline_), kCancelSliceMs);
    if (ms == 0 || cancelled(cancel_)) return false;
    int dirs = libssh2_session_block_directions(session_);
    pollfd pfd{fd_, 0, 0};
    if (dirs & LIBSSH2_SESSION_BLOCK_INBOUND) pfd.events |= POLLIN;
    if (dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND) pfd.events |= POLLOUT;
    if (pfd.events == 0) pfd.events = POLLIN;  // libssh2 said EAGAIN without a direction: wait for data
    int n = ::poll(&pfd, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return Clock::now() < deadline_ ? true : false;
    return true;
  }
}

std::string last_error(LIBSSH2_SESSION* session) {
  char* msg = nullptr;
  int len = 0;
  int code = libssh2_session_last_error(session, &msg, &len, 0);
  std::string text = (msg && len > 0) ? std::string(msg, static_cast<size_t>(len)) : std::string("unknown error");
  return text + " (libssh2 " + std::to_string(code) + ")";
}

std::string base64_encode(const uint8_t* data, size_t len, bool pad) {
  std::string out(4 * ((len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(len));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  if (!pad) {
    while (!out.empty() && out.back() == '=') out.pop_back();
  }
  return out;
}

std::optional<std::vector<uint8_t>> base64_decode(std::string_view text) {
  std::string clean;
  for (char c : text) {
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') clean += c;
  }
  if (clean.size() % 4 != 0) return std::nullopt;
  std::vector<uint8_t> out(clean.size() / 4 * 3 + 1);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(clean.data()),
                          static_cast<int>(clean.size()));
  if (n < 0) return std::nullopt;
  size_t size = static_cast<size_t>(n);
  // EVP_DecodeBlock counts padding as zero bytes.
  if (!clean.empty() && clean.back() == '=') --size;
  if (clean.size() >= 2 && clean[clean.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

std::string home_dir() {
  if (const char* home = std::getenv("HOME"); home && *home) return home;
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_dir) return pw->pw_dir;
  return "/";
}

std::string local_user_name() {
  if (const passwd* pw = ::getpwuid(::getuid()); pw && pw->pw_name) return pw->pw_name;
  if (const char* user = std::getenv("USER"); user && *user) return user;
  return "root";
}

std::string expand_tilde(const std::string& path) {
  if (path == "~") return home_dir();
  if (path.rfind("~/", 0) == 0) return home_dir() + path.substr(1);
  return path;
}

}  // namespace sftpfs::ssh::detail
