// Helpers shared by the ssh layer's .cpp files; not part of its interface.
#pragma once

#include <libssh2.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ssh/session.hpp"
#include "util/result.hpp"

namespace sftpfs::ssh::detail {

using Clock = std::chrono::steady_clock;

// Drives libssh2 calls on a non-blocking session until they finish, waiting on the socket in the
// directions libssh2 asks for, never past one deadline shared by the whole connect. Time a person
// spends answering a prompt is not counted against it (pause/resume).
class IoWaiter {
 public:
  IoWaiter(LIBSSH2_SESSION* session, int fd, Clock::time_point deadline, const std::atomic<bool>* cancel = nullptr)
      : session_(session), fd_(fd), deadline_(deadline), cancel_(cancel) {}

  // Calls `call` until it returns something other than LIBSSH2_ERROR_EAGAIN; returns that, or
  // LIBSSH2_ERROR_TIMEOUT when the deadline passes first.
  template <class Call>
  int run(Call&& call) {
    for (;;) {
      int rc = call();
      if (rc != LIBSSH2_ERROR_EAGAIN) return rc;
      if (!wait_socket()) return LIBSSH2_ERROR_TIMEOUT;
    }
  }
  // For calls that return a pointer and report EAGAIN through libssh2_session_last_errno.
  template <class T, class Call>
  T* run_ptr(Call&& call) {
    for (;;) {
      T* p = call();
      if (p) return p;
      if (libssh2_session_last_errno(session_) != LIBSSH2_ERROR_EAGAIN) return nullptr;
      if (!wait_socket()) return nullptr;
    }
  }
  // Waits for the socket as libssh2's block directions say; false when the deadline passed.
  bool wait_socket();
  bool expired() const { return Clock::now() >= deadline_; }
  // Excludes time spent waiting for a person from the network deadline.
  void pause() { paused_at_ = Clock::now(); }
  void resume() {
    if (paused_at_) deadline_ += Clock::now() - *paused_at_;
    paused_at_.reset();
  }

 private:
  LIBSSH2_SESSION* session_;
  int fd_;
  Clock::time_point deadline_;
  const std::atomic<bool>* cancel_;  // set: give up as if the deadline had passed
  std::optional<Clock::time_point> paused_at_;
};

// The last libssh2 error message of a session (never contains secrets).
std::string last_error(LIBSSH2_SESSION* session);

std::string base64_encode(const uint8_t* data, size_t len, bool pad = true);
std::optional<std::vector<uint8_t>> base64_decode(std::string_view text);

// "~/x" -> "$HOME/x".
std::string expand_tilde(const std::string& path);
std::string home_dir();
std::string local_user_name();

// Opens a TCP connection (blocking up to `deadline`), with TCP_NODELAY, the socket left non-blocking.
Result<int> tcp_connect(const std::string& host, uint16_t port, Clock::time_point deadline,
                        const std::atomic<bool>* cancel = nullptr);

// The message for a failed libssh2_session_handshake: says when the other end is not an SSH server.
std::string handshake_failure(LIBSSH2_SESSION* session, const std::string& target, uint16_t port);

// A ProxyCommand or ProxyJump child whose stdin and stdout are one end of a socketpair; libssh2 uses the
// other end as its socket. Its stderr is a pipe that a small thread copies to whatever our stderr is at
// the time: the user's terminal in the foreground, /dev/null once daemonized. (Handing the child our
// stderr itself would keep the caller's terminal or pipe open for as long as the mount lives.)
class ProxyProcess {
 public:
  // Starts the proxy `options` asks for; nullptr when it asks for none. `socket_fd` receives our end of
  // the socketpair (close-on-exec, non-blocking), owned by the caller.
  static Result<std::unique_ptr<ProxyProcess>> start(const SessionOptions& options, int& socket_fd);
  // Waits a short grace period for the child to leave by itself (its socket should be closed by now),
  // then SIGTERM, then SIGKILL, by pid; always reaps it.
  ~ProxyProcess();
  ProxyProcess(const ProxyProcess&) = delete;
  ProxyProcess& operator=(const ProxyProcess&) = delete;

  int pid() const { return reaped_ ? -1 : pid_; }
  // "ProxyCommand 'x'" or "ProxyJump 'x'", for messages.
  const std::string& description() const { return description_; }
  // Whether the child has ended within `wait` (reaping it); if so, how: "exited with status 3" or
  // "was killed by signal 9".
  std::optional<std::string> ended_within(std::chrono::milliseconds wait);

 private:
  ProxyProcess(int pid, std::string description) : pid_(pid), description_(std::move(description)) {}
  bool try_reap();  // true once the child has been reaped
  void start_stderr_relay(int read_fd);
  void stop_stderr_relay();
  int pid_;
  bool reaped_ = false;
  int status_ = 0;
  std::string description_;
  int stop_relay_fd_ = -1;  // write end of a pipe that tells the relay thread to finish
  std::thread relay_;
};

// Builds the argv for a ProxyJump spec, as OpenSSH does (see SessionOptions::proxy_jump); an error for a
// malformed spec. Exposed for tests.
Result<std::vector<std::string>> proxy_jump_argv(const SessionOptions& options);

// Turns an ssh_config algorithm list (see SessionOptions::ciphers) into a libssh2 preference string
// holding only what libssh2 implements for `method_type`; empty means "library default". An error
// naming `option` when nothing usable is left or the list is malformed.
Result<std::string> method_preference(LIBSSH2_SESSION* session, int method_type, const std::string& spec,
                                      const char* option);

// Host key policy: before the handshake, which key types known_hosts records for the host; after it,
// the verdict on the key the server presented.
class KnownHosts {
 public:
  KnownHosts(LIBSSH2_SESSION* session, const SessionOptions& options);
  ~KnownHosts();
  KnownHosts(const KnownHosts&) = delete;
  KnownHosts& operator=(const KnownHosts&) = delete;

  // libssh2 host key method names for the types recorded for this host, most preferred first; empty
  // when none is recorded (then the library default order applies).
  std::vector<std::string> recorded_key_methods() const;
  // Checks the negotiated host key. Appends warnings (e.g. "added to known_hosts") to `warnings`.
  // Sets *disable_interactive_auth when a changed key was let through (StrictHostKeyChecking=no),
  // as ssh does: no password may be sent to a possible impostor.
  Status verify(std::vector<std::string>& warnings, bool* disable_interactive_auth);

 private:
  struct File;
  LIBSSH2_SESSION* session_;
  const SessionOptions& options_;
  std::string lookup_name_;  // "host", "[host]:port" or the HostKeyAlias
  std::vector<File> files_;
};

// User authentication in the configured order. `info` receives auth_method.
Status authenticate(LIBSSH2_SESSION* session, IoWaiter& io, const SessionOptions& options,
                    bool allow_interactive, SessionInfo& info);

// "a<sep>b<sep>c": for libssh2 method lists and messages.
inline std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

}  // namespace sftpfs::ssh::detail
