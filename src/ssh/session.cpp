// Session::connect: TCP, handshake, host key check, authentication, all under one deadline.
#include "ssh/session.hpp"

#include <libssh2.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

#include "ssh/internal.hpp"

namespace sftpfs::ssh {

namespace {
constexpr uint32_t kHostKeyRefusedCode = 2;  // Error::code of an auth error; 1 is a wrong passphrase
}

Error host_key_refused(std::string message) { return Error{Error::Kind::auth, kHostKeyRefusedCode, std::move(message)}; }
bool is_host_key_refused(const Error& error) {
  return error.kind == Error::Kind::auth && error.code == kHostKeyRefusedCode;
}


using detail::Clock;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { libssh2_init(0); });
}

void ChannelDeleter::operator()(LIBSSH2_CHANNEL* channel) const {
  if (channel) libssh2_channel_free(channel);
}

namespace {

std::string method_or_empty(LIBSSH2_SESSION* session, int type) {
  const char* m = libssh2_session_methods(session, type);
  return m ? m : "";
}

std::string host_key_type_name(int type) {
  switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521";
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519";
    default: return "unknown";
  }
}

using detail::join;

// KexAlgorithms, HostKeyAlgorithms, Ciphers and MACs, before the handshake. The host key types
// recorded in known_hosts narrow the host key list further (libssh2 1.10 would otherwise ask for
// ECDSA even when only the ed25519 key is known).
Status set_method_preferences(LIBSSH2_SESSION* s, const SessionOptions& options,
                              const std::vector<std::string>& recorded_host_key_methods) {
  struct Preference {
    const std::string& spec;
    const char* option;
    std::vector<int> methods;
  };
  const Preference preferences[] = {
      {options.kex, "KexAlgorithms", {LIBSSH2_METHOD_KEX}},
      {options.ciphers, "Ciphers", {LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC}},
      {options.macs, "MACs", {LIBSSH2_METHOD_MAC_CS, LIBSSH2_METHOD_MAC_SC}},
  };
  for (const Preference& p : preferences) {
    auto pref = detail::method_preference(s, p.methods.front(), p.spec, p.option);
    if (!pref) return pref.take_error();
    if (pref->empty()) continue;
    for (int method : p.methods) {
      if (libssh2_session_method_pref(s, method, pref->c_str()) != 0)
        return Error::not_supported(std::string(p.option) + "=" + p.spec + " is refused by libssh2: " +
                                    detail::last_error(s));
    }
  }

  auto host_keys = detail::method_preference(s, LIBSSH2_METHOD_HOSTKEY, options.host_key_algorithms,
                                             "HostKeyAlgorithms");
  if (!host_keys) return host_keys.take_error();
  std::vector<std::string> wanted;
  if (!host_keys->empty()) {
    std::vector<std::string> allowed;
    for (size_t start = 0; start <= host_keys->size();) {
      size_t end = host_keys->find(',', start);
      if (end == std::string::npos) end = host_keys->size();
      allowed.push_back(host_keys->substr(start, end - start));
      start = end + 1;
    }
    for (const std::string& m : allowed)
      if (std::find(recorded_host_key_methods.begin(), recorded_host_key_methods.end(), m) !=
          recorded_host_key_methods.end())
        wanted.push_back(m);
    // None of the recorded types is allowed: the server will show a key known_hosts does not have,
    // and verification says so.
    if (wanted.empty()) wanted = allowed;
  } else {
    wanted = recorded_host_key_methods;
  }
  if (!wanted.empty()) {
    std::string pref = join(wanted, ",");
    if (libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY, pref.c_str()) != 0 &&
        !options.host_key_algorithms.empty()) {
      return Error::not_supported("HostKeyAlgorithms=" + options.host_key_algorithms + " is refused by libssh2: " +
                                  detail::last_error(s));
    }
    // Without HostKeyAlgorithms, a refusal means none of the recorded types is implemented by
    // libssh2 1.10 (e.g. only rsa-sha2 keys are recorded): keep the default order; verification will
    // then report the key as unknown.
  }
  return {};
}

}  // namespace

Session::Session() = default;

int Session::proxy_pid() const { return proxy_ ? proxy_->pid() : -1; }

Result<std::unique_ptr<Session>> Session::connect(const SessionOptions& given) {
  global_init();
  std::unique_ptr<Session> self(new Session());  // private constructor: make_unique cannot reach it
  self->options_ = given;
  SessionOptions& options = self->options_;
  if (options.user.empty()) options.user = detail::local_user_name();
  const auto deadline = Clock::now() + options.connect_timeout;

  auto proxy = detail::ProxyProcess::start(options, self->fd_);
  if (!proxy) return proxy.take_error();
  self->proxy_ = std::move(*proxy);
  if (!self->proxy_) {
    auto fd = detail::tcp_connect(options.host, options.port, deadline, options.cancel.get());
    if (!fd) return fd.take_error();
    self->fd_ = *fd;
  }
  // "host port 22", or "host port 22 through ProxyJump 'gw'", for messages.
  std::string target = options.host + " port " + std::to_string(options.port);
  if (self->proxy_) target += " through " + self->proxy_->description();

  self->session_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, nullptr);
  if (!self->session_) return Error::errno_error(ENOMEM, "cannot allocate an SSH session");
  LIBSSH2_SESSION* s = self->session_;
  libssh2_session_set_blocking(s, 0);
  if (options.compression) libssh2_session_flag(s, LIBSSH2_FLAG_COMPRESS, 1);

  detail::KnownHosts known_hosts(s, options);
  if (auto st = set_method_preferences(s, options, known_hosts.recorded_key_methods()); !st) return st.take_error();

  detail::IoWaiter io(s, self->fd_, deadline, options.cancel.get());
  int rc = io.run([&] { return libssh2_session_handshake(s, self->fd_); });
  if (rc != 0 && self->proxy_) {
    // A proxy that could not reach the server (or failed to start) usually exits: say so, not "banner".
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto wait = std::clamp(left, std::chrono::milliseconds(0), std::chrono::milliseconds(500));
    if (auto ended = self->proxy_->ended_within(wait)) {
      return Error::transport_error(self->proxy_->description() + " " + *ended + " before the SSH handshake with " +
                                    options.host + " port " + std::to_string(options.port) + " completed");
    }
  }
  if (rc == LIBSSH2_ERROR_TIMEOUT) {
    return Error::timed_out("SSH handshake with " + target + " did not complete within " +
                            std::to_string(options.connect_timeout.count()) +
                            " ms (is an SSH server listening there?)");
  }
  if (rc != 0) {
    return Error::transport_error(detail::handshake_failure(s, target, options.port));
  }

  SessionInfo& info = self->info_;
  if (const char* banner = libssh2_session_banner_get(s)) info.remote_banner = banner;
  info.kex = method_or_empty(s, LIBSSH2_METHOD_KEX);
  info.host_key_type = method_or_empty(s, LIBSSH2_METHOD_HOSTKEY);
  info.cipher_cs = method_or_empty(s, LIBSSH2_METHOD_CRYPT_CS);
  info.cipher_sc = method_or_empty(s, LIBSSH2_METHOD_CRYPT_SC);
  info.mac_cs = method_or_empty(s, LIBSSH2_METHOD_MAC_CS);
  info.mac_sc = method_or_empty(s, LIBSSH2_METHOD_MAC_SC);
  info.compression_cs = method_or_empty(s, LIBSSH2_METHOD_COMP_CS);
  size_t key_len = 0;
  int key_type = 0;
  if (libssh2_session_hostkey(s, &key_len, &key_type) && info.host_key_type.empty()) {
    info.host_key_type = host_key_type_name(key_type);
  }
  if (const char* hash = libssh2_hostkey_hash(s, LIBSSH2_HOSTKEY_HASH_SHA256)) {
    info.host_key_sha256 = "SHA256:" + detail::base64_encode(reinterpret_cast<const uint8_t*>(hash), 32, false);
  }

  bool disable_interactive = false;
  if (auto st = known_hosts.verify(info.warnings, &disable_interactive); !st) return st.take_error();

  if (auto st = detail::authenticate(s, io, options, !disable_interactive, info); !st) return st.take_error();

  if (options.server_alive_interval.count() > 0) {
    libssh2_keepalive_config(s, 1, static_cast<unsigned>(options.server_alive_interval.count()));
  }
  return self;
}

Result<ChannelPtr> Session::open_sftp_channel(uint32_t window_size) {
  const auto deadline = Clock::now() + options_.connect_timeout;
  detail::IoWaiter io(session_, fd_, deadline, options_.cancel.get());
  if (window_size < 32768) window_size = 32768;
  LIBSSH2_CHANNEL* raw_channel = io.run_ptr<LIBSSH2_CHANNEL>([&] {
    return libssh2_channel_open_ex(session_, "session", sizeof("session") - 1, window_size,
                                   LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
  });
  if (!raw_channel) {
    if (io.expired()) return Error::timed_out("opening an SSH channel timed out");
    return Error::transport_error("cannot open an SSH channel: " + detail::last_error(session_));
  }
  ChannelPtr channel(raw_channel);
  // Unread stderr would keep channel_eof() at 0 and fill the window: discard it.
  io.run([&] { return libssh2_channel_handle_extended_data2(raw_channel, LIBSSH2_CHANNEL_EXTENDED_DATA_IGNORE); });
  int rc = io.run([&] {
    return libssh2_channel_process_startup(raw_channel, "subsystem", sizeof("subsystem") - 1, "sftp", 4);
  });
  if (rc == LIBSSH2_ERROR_TIMEOUT) return Error::timed_out("starting the sftp subsystem timed out");
  if (rc != 0) {
    return Error::transport_error("the server refused the sftp subsystem (" + detail::last_error(session_) +
                                  "); is 'Subsystem sftp' configured in its sshd_config?");
  }
  return channel;
}

Session::~Session() {
  if (session_) {
    // Polite goodbye, but never wait long for a dead peer.
    detail::IoWaiter io(session_, fd_, Clock::now() + std::chrono::milliseconds(500));
    if (fd_ >= 0) {
      libssh2_session_set_blocking(session_, 0);
      io.run([&] { return libssh2_session_disconnect_ex(session_, SSH_DISCONNECT_BY_APPLICATION, "bye", ""); });
    }
    // In non-blocking mode session_free returns EAGAIN as soon as closing a channel would wait, and
    // frees nothing. Blocking with a short timeout frees everything even when the peer is gone.
    libssh2_session_set_timeout(session_, 500);
    libssh2_session_set_blocking(session_, 1);
    libssh2_session_free(session_);
    session_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  proxy_.reset();  // after the close: the proxy sees EOF and gets its grace period to leave
}

}  // namespace sftpfs::ssh
