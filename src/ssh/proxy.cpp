// ProxyCommand / ProxyJump: a child process that carries the SSH bytes over a socketpair, and the
// ssh_config algorithm lists turned into libssh2 method preferences.
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "ssh/internal.hpp"

extern char** environ;

namespace sftpfs::ssh::detail {

namespace {

bool is_none(const std::string& value) { return value.empty() || value == "none" || value == "NONE" || value == "None"; }

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(sep, start);
    out.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

using detail::join;

struct Hop {
  std::string user, host, port;  // user and port may be empty
};

// One ProxyJump hop: [user@]host[:port], host an IPv6 literal in brackets if it has colons; an
// ssh:// prefix is allowed, as OpenSSH allows it.
Result<Hop> parse_hop(std::string text, const std::string& spec) {
  auto bad = [&](const std::string& why) {
    return Error::errno_error(EINVAL, "ProxyJump '" + spec + "': " + why);
  };
  if (text.rfind("ssh://", 0) == 0) {
    text.erase(0, 6);
    if (!text.empty() && text.back() == '/') text.pop_back();
  }
  Hop hop;
  if (size_t at = text.rfind('@'); at != std::string::npos) {
    hop.user = text.substr(0, at);
    text.erase(0, at + 1);
    if (hop.user.empty()) return bad("empty user name before '@'");
  }
  std::string port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) return bad("'[' without ']'");
    hop.host = text.substr(1, close - 1);
    std::string rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad("unexpected text after ']'");
      port = rest.substr(1);
      if (port.empty()) return bad("empty port after ':'");
    }
  } else if (size_t colon = text.find(':'); colon != std::string::npos && text.find(':', colon + 1) == std::string::npos) {
    hop.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) return bad("empty port after ':'");
  } else {
    hop.host = text;  // a bare IPv6 literal, or a name without a port
  }
  if (hop.host.empty()) return bad("empty host name");
  // The hop becomes an argument of ssh: it must not be taken for an option, nor smuggle in anything.
  for (const std::string* part : {&hop.user, &hop.host}) {
    if (!part->empty() && (*part)[0] == '-') return bad("'" + *part + "' may not start with '-'");
    for (char c : *part) {
      if (static_cast<unsigned char>(c) <= ' ' || c == '\'' || c == '"' || c == '\\' || c == '`')
        return bad("'" + *part + "' contains a character not allowed in a host or user name");
    }
  }
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return bad("bad port '" + port + "'");
    unsigned long n = std::stoul(port);
    if (n == 0 || n > 65535) return bad("bad port '" + port + "'");
    hop.port = std::to_string(n);
  }
  return hop;
}

std::string hop_text(const Hop& hop) {
  std::string out = hop.user.empty() ? "" : hop.user + "@";
  bool brackets = hop.host.find(':') != std::string::npos;
  out += brackets ? "[" + hop.host + "]" : hop.host;
  if (!hop.port.empty()) out += ":" + hop.port;
  return out;
}

std::string status_text(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "ended (status " + std::to_string(status) + ")";
}

// Closes an fd on scope exit unless released.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

}  // namespace

Result<std::vector<std::string>> proxy_jump_argv(const SessionOptions& options) {
  const std::string& spec = options.proxy_jump;
  std::vector<std::string> hops = split(spec, ',');
  // As OpenSSH: the LAST hop runs -W to the target; the hops before it are its own -J.
  std::vector<std::string> earlier;
  Hop last;
  for (size_t i = 0; i < hops.size(); ++i) {
    auto hop = parse_hop(hops[i], spec);
    if (!hop) return hop.take_error();
    if (i + 1 == hops.size()) last = *hop;
    else earlier.push_back(hop_text(*hop));
  }
  std::vector<std::string> argv{"ssh"};
  if (!options.ssh_config_file.empty()) argv.insert(argv.end(), {"-F", options.ssh_config_file});
  for (const std::string& option : options.proxy_jump_options) argv.insert(argv.end(), {"-o", option});
  if (!last.user.empty()) argv.insert(argv.end(), {"-l", last.user});
  if (!last.port.empty()) argv.insert(argv.end(), {"-p", last.port});
  if (!earlier.empty()) argv.insert(argv.end(), {"-J", join(earlier, ",")});
  argv.insert(argv.end(), {"-W", "[" + options.host + "]:" + std::to_string(options.port), last.host});
  return argv;
}

Result<std::unique_ptr<ProxyProcess>> ProxyProcess::start(const SessionOptions& options, int& socket_fd) {
  std::vector<std::string> args;
  std::string description;
  bool search_path = false;
  if (!is_none(options.proxy_command)) {
    description = "ProxyCommand '" + options.proxy_command + "'";
    // exec: the shell is replaced by the command, so the pid we hold is the proxy itself.
    args = {"/bin/sh", "-c", "exec " + options.proxy_command};
  } else if (!is_none(options.proxy_jump)) {
    description = "ProxyJump '" + options.proxy_jump + "'";
    auto argv = proxy_jump_argv(options);
    if (!argv) return argv.take_error();
    args = std::move(*argv);
    search_path = true;
  } else {
    return std::unique_ptr<ProxyProcess>();
  }
  if (options.debug) options.debug("starting " + description + ": " + join(args, " "));

  // Everything the child needs is prepared here; posix_spawn allocates nothing in the child.
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0)
    return Error::errno_error(errno, "cannot create a pipe for " + description + ": " + std::strerror(errno));
  FdGuard error_read{error_pipe[0]};
  FdGuard error_write{error_pipe[1]};

  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    return Error::errno_error(errno, "cannot create a socket pair for " + description + ": " + std::strerror(errno));
  FdGuard ours{pair[0]};
  FdGuard theirs{pair[1]};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the copies; every other descriptor of ours (the FUSE device, other
  // connections' sockets) stays out of the child.
  posix_spawn_file_actions_adddup2(&actions, theirs.fd, STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, theirs.fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, error_write.fd, STDERR_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Our threads may block signals and we ignore SIGPIPE: the proxy starts with a clean slate, so that
  // SIGTERM reaches it and a broken pipe ends it as it would end any program.
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = search_path ? ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ)
                       : ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return Error::transport_error("cannot start " + description + ": " + args[0] + ": " + std::strerror(rc));
  }
  int flags = ::fcntl(ours.fd, F_GETFL);
  ::fcntl(ours.fd, F_SETFL, flags | O_NONBLOCK);
  // Bulk transfers go through this pair: give it room comparable to a TCP socket's.
  int buffer = 1 << 20;
  ::setsockopt(ours.fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  ::setsockopt(ours.fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  ::close(error_write.release());
  socket_fd = ours.release();
  std::unique_ptr<ProxyProcess> process(new ProxyProcess(pid, std::move(description)));
  process->start_stderr_relay(error_read.release());
  return process;
}

void ProxyProcess::start_stderr_relay(int read_fd) {
  int stop[2];
  if (::pipe2(stop, O_CLOEXEC) != 0) {
    ::close(read_fd);  // no relay: the child's messages are lost, the connection still works
    return;
  }
  stop_relay_fd_ = stop[1];
  relay_ = std::thread([read_fd, stop_read = stop[0]] {
    char buf[4096];
    bool stopping = false;
    for (;;) {
      pollfd fds[2] = {{read_fd, POLLIN, 0}, {stop_read, POLLIN, 0}};
      // Once told to stop, only what is already buffered is copied.
      int n = ::poll(fds, stopping ? 1 : 2, stopping ? 0 : -1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (!stopping && (fds[1].revents & (POLLIN | POLLHUP))) {
        stopping = true;
        continue;
      }
      if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = ::read(read_fd, buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;  // every holder of the pipe has closed it
      for (ssize_t done = 0; done < got;) {
        ssize_t w = ::write(STDERR_FILENO, buf + done, static_cast<size_t>(got - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;  // our stderr is gone: drop the message
        done += w;
      }
    }
    ::close(read_fd);
    ::close(stop_read);
  });
}

void ProxyProcess::stop_stderr_relay() {
  if (stop_relay_fd_ >= 0) {
    ::close(stop_relay_fd_);  // POLLHUP on the read end: a grandchild may still hold the pipe open
    stop_relay_fd_ = -1;
  }
  if (relay_.joinable()) relay_.join();
}

bool ProxyProcess::try_reap() {
  if (reaped_) return true;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
  } else if (r < 0 && errno == ECHILD) {
    reaped_ = true;  // reaped elsewhere (SIGCHLD ignored): never signal a pid that is no longer ours
    status_ = 0;
  }
  return reaped_;
}

std::optional<std::string> ProxyProcess::ended_within(std::chrono::milliseconds wait) {
  const auto until = Clock::now() + wait;
  while (!try_reap()) {
    if (Clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_text(status_);
}

ProxyProcess::~ProxyProcess() {
  // The socket is closed by now: a well-behaved proxy sees EOF and leaves by itself.
  if (!ended_within(std::chrono::milliseconds(500))) {
    ::kill(pid_, SIGTERM);
    if (!ended_within(std::chrono::milliseconds(1000))) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
    }
  }
  stop_stderr_relay();
}

Result<std::string> method_preference(LIBSSH2_SESSION* session, int method_type, const std::string& spec,
                                      const char* option) {
  std::string list = spec;
  while (!list.empty() && (list.back() == ' ' || list.back() == '\t')) list.pop_back();
  while (!list.empty() && (list.front() == ' ' || list.front() == '\t')) list.erase(0, 1);
  if (list.empty()) return std::string();
  char mode = 0;
  if (list[0] == '^' || list[0] == '+' || list[0] == '-') {
    mode = list[0];
    list.erase(0, 1);
  }
  std::vector<std::string> patterns;
  for (std::string& item : split(list, ','))
    if (!item.empty()) patterns.push_back(item);
  if (patterns.empty())
    return Error::errno_error(EINVAL, std::string(option) + " '" + spec + "' names no algorithm");

  std::vector<std::string> supported;
  const char** algs = nullptr;
  int count = libssh2_session_supported_algs(session, method_type, &algs);
  if (count < 0 || !algs)
    return Error::transport_error(std::string("cannot list libssh2's ") + option + ": " + last_error(session));
  for (int i = 0; i < count; ++i) supported.emplace_back(algs[i]);
  libssh2_free(session, algs);

  auto matches = [](const std::string& pattern, const std::string& name) {
    return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
  };
  std::vector<std::string> chosen;
  if (mode == '+') return std::string();  // libssh2's default list already holds everything it implements
  if (mode == '-') {
    for (const std::string& name : supported) {
      bool removed = false;
      for (const std::string& p : patterns) removed = removed || matches(p, name);
      if (!removed) chosen.push_back(name);
    }
  } else {
    for (const std::string& p : patterns)
      for (const std::string& name : supported)
        if (matches(p, name) && std::find(chosen.begin(), chosen.end(), name) == chosen.end()) chosen.push_back(name);
    if (!chosen.empty() && mode == '^') {
      for (const std::string& name : supported)
        if (std::find(chosen.begin(), chosen.end(), name) == chosen.end()) chosen.push_back(name);
    }
  }
  if (chosen.empty()) {
    return Error::not_supported(std::string(option) + "=" + spec + ": " +
                                (mode == '-' ? "removes every algorithm" : "names no algorithm") + " that libssh2 " +
                                LIBSSH2_VERSION + " implements (it has: " + join(supported, ",") + ")");
  }
  return join(chosen, ",");
}

}  // namespace sftpfs::ssh::detail
