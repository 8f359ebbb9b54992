#include "cli/status.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <ostream>
#include <sstream>

#include "util/log.hpp"

namespace sftpfs::cli {

namespace {

constexpr std::string_view kPrefix = "sftpfs-status:";
// The first line of every answer: "OK" then the report, or "ERR why".
constexpr std::string_view kOk = "OK\n";
constexpr std::string_view kErr = "ERR ";

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char out[32];
  if (unit == 0) std::snprintf(out, sizeof out, "%llu bytes", static_cast<unsigned long long>(bytes));
  else std::snprintf(out, sizeof out, "%.1f %s", value, units[unit]);
  return out;
}

// "3.0 MiB (3145728 bytes)", or "603 bytes": readable, and exact for scripts.
std::string exact_bytes(uint64_t bytes) {
  if (bytes < 1024) return human_bytes(bytes);
  return human_bytes(bytes) + " (" + std::to_string(bytes) + " bytes)";
}

// "42s", "5m 3s", "2h 5m", "3d 4h": two units are enough to read at a glance.
std::string human_duration(std::chrono::system_clock::duration d) {
  long long s = std::chrono::duration_cast<std::chrono::seconds>(d).count();
  if (s < 0) s = 0;
  char out[48];
  if (s < 60) std::snprintf(out, sizeof out, "%llds", s);
  else if (s < 3600) std::snprintf(out, sizeof out, "%lldm %llds", s / 60, s % 60);
  else if (s < 86400) std::snprintf(out, sizeof out, "%lldh %lldm", s / 3600, (s % 3600) / 60);
  else std::snprintf(out, sizeof out, "%lldd %lldh", s / 86400, (s % 86400) / 3600);
  return out;
}

std::string local_time(std::chrono::system_clock::time_point t) {
  std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char out[64];
  std::strftime(out, sizeof out, "%Y-%m-%d %H:%M:%S %Z", &tm);
  return out;
}

sockaddr_un socket_address(const std::string& name, socklen_t& length) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  address.sun_path[0] = '\0';  // abstract namespace
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return address;
}

bool send_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    text.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void set_timeout(int fd, int option, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv);
}

}  // namespace

std::string status_socket_name(const std::string& mountpoint) {
  std::string name = std::string(kPrefix) + mountpoint;
  if (name.size() + 1 <= sizeof(sockaddr_un::sun_path)) return name;
  // Too long for sun_path: a hash (FNV-1a 64) names it instead; both sides compute the same.
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : mountpoint) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return std::string(kPrefix) + "#" + hex;
}

std::string format_status(const StatusSnapshot& s) {
  std::ostringstream out;
  out << "mount " << s.mountpoint << ": " << s.source << ", pid " << s.pid << ", mounted " << local_time(s.mounted_at)
      << " (" << human_duration(s.now - s.mounted_at) << " ago)\n";
  for (size_t i = 0; i < s.client.connections.size(); ++i) {
    const client::ConnectionStatus& c = s.client.connections[i];
    out << "connection " << i << ": " << client::state_name(c.state) << " since " << local_time(c.since) << " ("
        << human_duration(s.now - c.since) << ")";
    if (c.state == client::ConnectionStatus::State::reconnecting) out << ", attempt " << c.attempts;
    out << ", reconnects " << c.reconnects;
    if (c.rtt.count() > 0) {
      char rtt[32];
      std::snprintf(rtt, sizeof rtt, "%.2f ms", static_cast<double>(c.rtt.count()) / 1000.0);
      out << ", rtt " << rtt;
    } else {
      out << ", rtt not measured yet";
    }
    out << ", in flight " << c.in_flight << ", waiting for reconnect " << c.held;
    if (c.channels > 1) out << ", SFTP channels open " << c.channels_open << " of " << c.channels;
    out << "\n";
    out << "  sent " << exact_bytes(c.bytes_sent) << ", received " << exact_bytes(c.bytes_received)
        << "; read data received in place: " << exact_bytes(c.bytes_received_in_place) << "\n";
    if (!c.last_error.empty()) out << "  last dropped: " << c.last_error << "\n";
  }
  for (const auto& cache : s.fs.caches) {
    uint64_t lookups = cache.hits + cache.misses;
    out << "cache " << cache.name << ": ";
    if (lookups == 0) {
      out << "no lookups yet";
    } else {
      char rate[16];
      std::snprintf(rate, sizeof rate, "%.1f%%", 100.0 * static_cast<double>(cache.hits) / static_cast<double>(lookups));
      out << rate << " hits (" << cache.hits << " of " << lookups << " lookups)";
    }
    out << ", " << cache.entries << " entries\n";
  }
  out << "memory: " << human_bytes(s.resident_bytes) << " resident; prefetched " << human_bytes(s.fs.prefetch_used)
      << " of " << human_bytes(s.fs.prefetch_budget) << "; written, not yet confirmed "
      << human_bytes(s.fs.write_behind_used) << " of " << human_bytes(s.fs.write_behind_budget) << "; "
      << s.fs.inodes << " inodes\n";
  out << "small files read ahead: " << s.fs.small_files_started << " started, " << s.fs.small_files_served
      << " served, " << s.fs.small_files_discarded << " discarded, " << s.fs.small_files_held << " held\n";
  return out.str();
}

// ---- the daemon's side ----

Result<std::unique_ptr<StatusServer>> StatusServer::start(const std::string& mountpoint,
                                                          std::function<std::string()> report) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::errno_error(errno, std::string("status socket: ") + std::strerror(errno));
  socklen_t length = 0;
  sockaddr_un address = socket_address(status_socket_name(mountpoint), length);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd, 8) != 0) {
    int err = errno;
    ::close(fd);
    return Error::errno_error(err, "status socket for " + mountpoint + ": " + std::strerror(err) +
                                       (err == EADDRINUSE ? " (another mount there answers --status)" : ""));
  }
  int stop = ::eventfd(0, EFD_CLOEXEC);
  if (stop < 0) {
    int err = errno;
    ::close(fd);
    return Error::errno_error(err, std::string("status socket: ") + std::strerror(err));
  }
  return std::unique_ptr<StatusServer>(new StatusServer(fd, stop, std::move(report)));
}

StatusServer::StatusServer(int listen_fd, int stop_fd, std::function<std::string()> report)
    : listen_fd_(listen_fd), stop_fd_(stop_fd), report_(std::move(report)), thread_([this] { run(); }) {}

StatusServer::~StatusServer() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  ::close(listen_fd_);
  ::close(stop_fd_);
}

void StatusServer::run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG_WARN("status socket: poll failed: %s; --status stops answering", std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    answer(fd);
    ::close(fd);
  }
}

void StatusServer::answer(int fd) {
  // One slow or stuck reader must not keep the next one waiting for long.
  set_timeout(fd, SO_SNDTIMEO, 2);
  ucred peer{};
  socklen_t size = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return;
  // The report shows what the user does (paths, traffic): for that user and root only.
  if (peer.uid != ::geteuid() && peer.uid != 0) {
    send_all(fd, std::string(kErr) + "this mount belongs to uid " + std::to_string(::geteuid()) +
                     "; only that user and root may see its status\n");
    return;
  }
  send_all(fd, std::string(kOk) + report_());
}

// ---- the client's side ----

namespace {

// Absolute, with the directories above resolved, without touching the mount point itself (a stat
// there would be answered by the very mount being asked about).
std::string absolute_without_last(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.empty()) return p;
  size_t slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  if (base == "." || base == "..") {
    char resolved[PATH_MAX];
    return ::realpath(p.c_str(), resolved) ? resolved : p;
  }
  char resolved[PATH_MAX];
  std::string out;
  if (::realpath(dir.c_str(), resolved)) {
    out = resolved;
  } else if (p[0] == '/') {
    return p;  // nothing there to resolve; nothing is mounted there either, most likely
  } else {
    char cwd[PATH_MAX];
    if (!::getcwd(cwd, sizeof cwd)) return {};
    return std::string(cwd) + "/" + p;
  }
  if (out != "/") out += "/";
  return out + base;
}

// The answer of the status socket for `mountpoint`, or nullopt when nothing listens there.
std::optional<std::string> ask(const std::string& mountpoint) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  socklen_t length = 0;
  sockaddr_un address = socket_address(status_socket_name(mountpoint), length);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  set_timeout(fd, SO_RCVTIMEO, 10);
  std::string answer;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return answer;
}

}  // namespace

int print_status(const std::string& mountpoint, std::ostream& out, std::ostream& err) {
  std::optional<std::string> answer;
  std::string first = absolute_without_last(mountpoint);
  if (!first.empty()) answer = ask(first);
  if (!answer) {
    // A symlink to the mount point: only resolving it all finds the name the mount was made under.
    char resolved[PATH_MAX];
    if (::realpath(mountpoint.c_str(), resolved) && first != resolved) answer = ask(resolved);
  }
  if (!answer) {
    err << "sftpfs: no sftpfs mount at " << mountpoint << "\n";
    return 1;
  }
  if (answer->compare(0, kOk.size(), kOk) == 0) {
    out << answer->substr(kOk.size());
    return 0;
  }
  if (answer->compare(0, kErr.size(), kErr) == 0) {
    err << "sftpfs: " << mountpoint << ": " << answer->substr(kErr.size());
    return 1;
  }
  err << "sftpfs: the mount at " << mountpoint << " gave no status (it may be shutting down)\n";
  return 1;
}

}  // namespace sftpfs::cli
