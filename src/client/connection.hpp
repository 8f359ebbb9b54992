// One SFTP connection: an ssh::Session, its "sftp" channels, and one I/O thread that alone touches them.
// Any thread submits a request with a completion callback; the I/O thread writes it, matches the reply
// by id and runs the callback. Hundreds of requests can be in flight.
//
// Channels: channel 0 opens with the connection; the others (up to ConnectionOptions::channels) open
// when a request first names them, without a second login. Each is its own sftp-server on the server,
// with its own handles and its own flow-control window (OpenSSH grants 2 MiB per channel, which caps
// one channel's writes at 2 MiB per round trip). Requests on one channel are answered in order;
// requests on different channels are not ordered against each other.
//
// Failure: when the session breaks (socket error, EOF, malformed packet, a link that stops answering),
// every pending and queued request completes with an error at once (Error::Kind::disconnected, or
// protocol for a malformed reply); later submits complete with an error at once. No caller ever waits
// forever: each request has a deadline. A Connection never comes back; client::Link replaces it.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "sftp/protocol.hpp"
#include "ssh/session.hpp"
#include "util/result.hpp"

namespace sftpfs::client {

using Clock = std::chrono::steady_clock;

struct ConnectionOptions {
  // A request that has no reply by then completes with Error::Kind::timeout; the connection is then
  // considered hung and is failed, because SFTP servers answer in order of arrival per channel.
  std::chrono::milliseconds request_timeout{60000};
  // The channel's receive window: throughput <= window / RTT. 16 MiB covers 200 MB/s at 80 ms.
  uint32_t window_size = 16u << 20;
  // Most requests written and not yet answered; more wait in the queue (the server holds every
  // in-flight request in its buffers).
  size_t max_in_flight = 1024;
  // Read and write sizes used when limits@openssh.com is absent (accepted by every server probed).
  uint32_t default_io_size = 32768;
  // Never more than this per READ/WRITE, whatever the server says: one request must fit a packet
  // libssh2 accepts and the server's max packet.
  uint32_t max_io_size = 255 * 1024;
  // SFTP channels this connection may open on its one session (see above; -o max_channels). OpenSSH
  // allows 10 sessions per connection (MaxSessions). 1: only channel 0.
  size_t channels = 4;
  // Called once, on the I/O thread, when the connection fails (not when it is closed by its owner),
  // before the pending requests complete: lets the owner start replacing it at once, idle or not.
  std::function<void(const std::string& reason)> on_failure;
};

// When a silent link is probed and when it is declared dead. "Owed" starts at the first request or
// probe sent after the server last spoke; the link is dead when nothing at all has come back for
// dead_after since then. Silence while nothing is owed (an idle mount) is never death by itself.
struct Liveness {
  std::chrono::milliseconds busy_probe;  // probe after this much silence while requests wait
  std::chrono::milliseconds idle_probe;  // probe after this much silence while idle
  std::chrono::milliseconds dead_after;  // owed and silent this long: dead
  // ServerAliveInterval=N, ServerAliveCountMax=C: probe every N s, dead after N x C s. Unset: probe
  // after 5 s of waiting or 15 s idle; dead after 15 s (a request_timeout under 20 s shortens both:
  // probe after a quarter of it, at least 2 s; dead after it, at least two probes).
  static Liveness of(const ssh::SessionOptions& ssh_options, const ConnectionOptions& options);
};

// What INIT and limits@openssh.com told us.
struct ServerFeatures {
  sftp::ServerVersion version;
  sftp::Limits limits;         // zeros when the server did not say
  uint32_t max_read = 32768;   // what this client uses per READ
  uint32_t max_write = 32768;  // what this client uses per WRITE
  bool symlink_draft_order = false;  // the server wants SYMLINK (linkpath, targetpath)
  bool has(std::string_view ext) const { return version.has(ext); }
};

// Bytes sent right behind a request's packet, from where they are (a WRITE's data after the header
// sftp::build_write_header made): the buffer is kept alive, and not changed, until sent.
struct Payload {
  std::shared_ptr<const sftp::Bytes> buffer;
  size_t offset = 0;
  size_t length = 0;
  const uint8_t* data() const { return buffer->data() + offset; }
};

// Where a READ's data may be received: straight from libssh2 into this memory, not through the
// connection's receive buffer and a copy. The memory stays valid (`keep`) and nothing else touches it
// until the request completes; the reply's DataReply then points into it.
struct Sink {
  uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<void> keep;
};

// Called exactly once, on the I/O thread (or on the submitter's thread when the connection is already
// dead). The reply's byte views point into a buffer that lives only for the call: copy what you keep.
// Callbacks must not block; they may submit further requests.
using ReplyCallback = std::function<void(Result<sftp::Reply>)>;

class Connection {
 public:
  // Connects (blocking), starts the sftp subsystem, exchanges INIT/VERSION, asks limits@openssh.com
  // when offered, then starts the I/O thread.
  static Result<std::unique_ptr<Connection>> open(const ssh::SessionOptions& ssh_options,
                                                  const ConnectionOptions& options);
  ~Connection();  // fails whatever is pending, stops the I/O thread, closes the session
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Thread-safe. `packet` comes from an sftp::build_* function; its id is replaced by one this
  // connection assigns. deadline = {}: now + options.request_timeout (counted from when it is sent).
  // `channel` < options.channels; a channel not yet open is opened first. When the server refuses
  // to open it, its requests complete with Error::Kind::unsupported (the connection stays up).
  // `sink`: where a DATA reply's bytes may go (see Sink); the request must be a READ of at most
  // sink.size bytes.
  void submit(sftp::Bytes packet, ReplyCallback on_reply, Clock::time_point deadline = {}, size_t channel = 0,
              Payload payload = {}, Sink sink = {});

  const ServerFeatures& features() const { return features_; }
  const ssh::SessionInfo& session_info() const;
  bool alive() const { return !failed_.load(); }
  size_t channel_count() const;  // options.channels
  size_t channels_open() const { return channels_open_.load(); }
  // The reason the connection failed, once it has (empty before).
  std::string failure() const;
  // Requests written or queued and not yet completed: how busy this connection is.
  size_t outstanding() const { return outstanding_.load(); }
  // Fails the connection as if the network had dropped (used by shutdown and by tests).
  void fail(std::string reason);
  // Cuts the TCP connection under libssh2 (as a network drop would); the I/O thread notices at once.
  void cut();
  // Waits until the I/O thread has ended (after a failure), so every callback it owed has run.
  void wait_stopped();

  // Statistics for --status.
  uint64_t bytes_sent() const { return bytes_sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return bytes_received_.load(std::memory_order_relaxed); }
  // Of those, READ data received straight into its request's Sink.
  uint64_t bytes_received_in_place() const { return bytes_in_place_.load(std::memory_order_relaxed); }
  std::chrono::microseconds rtt() const { return std::chrono::microseconds(rtt_us_.load(std::memory_order_relaxed)); }
  // The shortest round trip seen: the path's latency, without the queueing a busy server adds to rtt().
  std::chrono::microseconds min_rtt() const { return std::chrono::microseconds(min_rtt_us_.load(std::memory_order_relaxed)); }

  struct Impl;

 private:
  explicit Connection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  ServerFeatures features_;
  std::atomic<bool> failed_{false};
  std::atomic<size_t> outstanding_{0};
  std::atomic<size_t> channels_open_{1};
  std::atomic<uint64_t> bytes_sent_{0}, bytes_received_{0}, bytes_in_place_{0}, rtt_us_{0}, min_rtt_us_{0};
  friend struct Impl;
};

}  // namespace sftpfs::client
