// One SSH connection: TCP connect, handshake, host key check, user authentication, keepalive, and the
// raw "sftp" subsystem channel. Knows nothing of SFTP semantics or FUSE.
//
// Threading: libssh2 allows one thread at a time per session. connect() runs blocking on the caller's
// thread; afterwards the session is handed to one client::Connection I/O thread, which switches it to
// non-blocking mode and is its only user.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/result.hpp"

typedef struct _LIBSSH2_SESSION LIBSSH2_SESSION;
typedef struct _LIBSSH2_CHANNEL LIBSSH2_CHANNEL;

namespace sftpfs::ssh {

namespace detail {
class ProxyProcess;
}

enum class StrictHostKeyChecking { yes, accept_new, no };

// How to ask a person for a secret. The CLI supplies one; tests supply canned answers.
// `prompt` is shown as is; `echo` says whether the answer may be shown. Returns nullopt when no answer
// can be had (no terminal and no askpass), which ends that authentication method.
using SecretPrompt = std::function<std::optional<std::string>(const std::string& prompt, bool echo)>;

struct SessionOptions {
  std::string host;           // name, IPv4 literal or IPv6 literal (without brackets)
  uint16_t port = 22;
  std::string user;           // empty: the local user's name
  std::chrono::milliseconds connect_timeout{15000};

  // Host keys
  StrictHostKeyChecking strict_host_key_checking = StrictHostKeyChecking::yes;
  std::vector<std::string> user_known_hosts_files;  // empty: ~/.ssh/known_hosts
  std::vector<std::string> global_known_hosts_files{"/etc/ssh/ssh_known_hosts"};
  std::string host_key_alias;  // HostKeyAlias, when set: the name looked up in known_hosts

  // Authentication, tried in this order: agent, identity files, password / keyboard-interactive.
  bool pubkey_authentication = true;          // PubkeyAuthentication: agent and key files at all
  bool use_agent = true;                      // SSH_AUTH_SOCK, unless IdentitiesOnly with files given
  std::vector<std::string> identity_files;    // empty: ~/.ssh/id_ed25519, id_ecdsa, id_rsa
  bool identities_only = false;
  bool password_authentication = true;
  bool kbd_interactive_authentication = true;
  bool batch_mode = false;                    // never prompt
  std::optional<std::string> password;        // e.g. read from stdin by password_stdin
  SecretPrompt prompt;                        // asks for passphrases and passwords; may be empty

  // Transport
  bool compression = false;
  std::chrono::seconds server_alive_interval{0};  // 0: no keepalive probes
  int server_alive_count_max = 3;
  // Algorithm preferences as ssh_config writes them: "a,b" (only these, in this order), "^a,b" (these
  // first), "+a,b" (append: libssh2's defaults already hold all it supports), "-a*,b" (remove; wildcards
  // allowed). Names libssh2 does not implement are dropped; none left is an error naming the option.
  // Empty: library default.
  std::string ciphers;              // Ciphers
  std::string kex;                  // KexAlgorithms
  std::string host_key_algorithms;  // HostKeyAlgorithms (narrowed further to the types known_hosts records)
  std::string macs;                 // MACs

  // Proxies (at most one is used; ProxyCommand wins if both are set here). The target's host and port
  // above still name the server for known_hosts; the proxy only carries the bytes.
  // ProxyCommand: a shell command, %-tokens already expanded, run as /bin/sh -c "exec COMMAND" with a
  // socket as its stdin and stdout; its stderr is ours. Empty or "none": no proxy.
  std::string proxy_command;
  // ProxyJump: "[user@]host[:port][,[user@]host[:port]...]" (IPv6 hosts in brackets), run as OpenSSH
  // does: ssh [-F FILE] [-o K=V...] -W [host]:port [-l user] [-p port] [-J rest] firsthop.
  // Empty or "none": no jump.
  std::string proxy_jump;
  std::string ssh_config_file;                 // -F FILE given to sftpfs: passed on to the jump ssh
  std::vector<std::string> proxy_jump_options;  // "Key=Value" passed to the jump ssh as -o (e.g. BatchMode=yes)
  // Set (by another thread) to abandon a connect in progress within ~200 ms: unmount while reconnecting.
  std::shared_ptr<const std::atomic<bool>> cancel;
  // Debug trace of connect steps (never secrets); may be empty.
  std::function<void(const std::string&)> debug;
};

// Facts about the established session, for --probe and logs.
struct SessionInfo {
  std::string remote_banner;
  std::string kex, host_key_type, cipher_cs, cipher_sc, mac_cs, mac_sc, compression_cs;
  std::string host_key_sha256;  // "SHA256:..." as ssh-keygen -l prints it
  std::string auth_method;      // "agent", "publickey <file>", "password", "keyboard-interactive"
  // Things the user should hear about even on success (e.g. a host key added to known_hosts).
  std::vector<std::string> warnings;
};

// Owns a libssh2 channel; frees it on destruction (the session must still be alive then).
struct ChannelDeleter {
  void operator()(LIBSSH2_CHANNEL* channel) const;
};
using ChannelPtr = std::unique_ptr<LIBSSH2_CHANNEL, ChannelDeleter>;

// An established, authenticated session with its socket. Closes both on destruction.
class Session {
 public:
  // Blocking: connect, handshake, verify host key, authenticate. Every failure says what is wrong and
  // what to do in Error::message (one line, for the user).
  static Result<std::unique_ptr<Session>> connect(const SessionOptions& options);

  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Opens a channel and starts the "sftp" subsystem on it (blocking). `window_size` is the channel's
  // receive window: on a WAN, throughput <= window / RTT, so the client asks for several MiB.
  Result<ChannelPtr> open_sftp_channel(uint32_t window_size);

  LIBSSH2_SESSION* raw() const { return session_; }
  int socket_fd() const { return fd_; }
  const SessionInfo& info() const { return info_; }
  const SessionOptions& options() const { return options_; }
  // The ProxyCommand/ProxyJump child's pid while it runs, else -1. Destroying the Session closes the
  // socket to it and ends it (SIGTERM, then SIGKILL, after a short grace period).
  int proxy_pid() const;

 private:
  Session();
  LIBSSH2_SESSION* session_ = nullptr;
  int fd_ = -1;  // TCP socket, or our end of the socketpair to the proxy
  std::unique_ptr<detail::ProxyProcess> proxy_;
  SessionInfo info_;
  SessionOptions options_;
};

// The host key did not match known_hosts (or is unknown under StrictHostKeyChecking=yes): a reconnect
// must stop rather than try again.
Error host_key_refused(std::string message);
bool is_host_key_refused(const Error& error);

// libssh2_init is not thread-safe: call this once from main before any thread starts. Idempotent.
void global_init();

}  // namespace sftpfs::ssh
