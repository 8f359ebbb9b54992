// Session::connect: TCP, handshake, host key check, authentication, all under one deadline.
#include "ssh/session.hpp"

#include <libssh2.h>
#include <unistd.h>

#include <mutex>

#include "ssh/internal.hpp"

namespace sftpfs::ssh {

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

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<Session>> Session::connect(const SessionOptions& given) {
  global_init();
  std::unique_ptr<Session> self(new Session());  // private constructor: make_unique cannot reach it
  self->options_ = given;
  SessionOptions& options = self->options_;
  if (options.user.empty()) options.user = detail::local_user_name();
  const auto deadline = Clock::now() + options.connect_timeout;

  auto fd = detail::tcp_connect(options.host, options.port, deadline);
  if (!fd) return fd.take_error();
  self->fd_ = *fd;

  self->session_ = libssh2_session_init_ex(nullptr, nullptr, nullptr, nullptr);
  if (!self->session_) return Error::errno_error(ENOMEM, "cannot allocate an SSH session");
  LIBSSH2_SESSION* s = self->session_;
  libssh2_session_set_blocking(s, 0);
  if (options.compression) libssh2_session_flag(s, LIBSSH2_FLAG_COMPRESS, 1);

  detail::KnownHosts known_hosts(s, options);
  if (auto methods = known_hosts.recorded_key_methods(); !methods.empty()) {
    std::string pref = join(methods, ",");
    if (libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY, pref.c_str()) != 0) {
      // None of the recorded types is supported by libssh2 1.10 (e.g. only ssh-rsa/rsa-sha2 keys are
      // recorded): keep the default order; verification will then report the key as unknown.
    }
  }
  if (!options.ciphers.empty()) {
    if (libssh2_session_method_pref(s, LIBSSH2_METHOD_CRYPT_CS, options.ciphers.c_str()) != 0 ||
        libssh2_session_method_pref(s, LIBSSH2_METHOD_CRYPT_SC, options.ciphers.c_str()) != 0) {
      return Error::not_supported("none of the ciphers '" + options.ciphers +
                                  "' is supported by libssh2 (try aes128-ctr,aes256-ctr)");
    }
  }

  detail::IoWaiter io(s, self->fd_, deadline);
  int rc = io.run([&] { return libssh2_session_handshake(s, self->fd_); });
  if (rc == LIBSSH2_ERROR_TIMEOUT) {
    return Error::timed_out("SSH handshake with " + options.host + " port " + std::to_string(options.port) +
                            " did not complete within " + std::to_string(options.connect_timeout.count()) +
                            " ms (is an SSH server listening there?)");
  }
  if (rc != 0) {
    return Error::transport_error("SSH handshake with " + options.host + " port " + std::to_string(options.port) +
                                  " failed: " + detail::last_error(s));
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
  detail::IoWaiter io(session_, fd_, deadline);
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
}

}  // namespace sftpfs::ssh
