// One slot of the client's pool: a Connection while it lives, and its replacement when it drops.
//
// States: connected -> (the connection fails) reconnecting -> (a new connection, open files reopened,
// held requests replayed in their original order) connected; stopped when reconnect is off, when the
// host key no longer matches, or at shutdown. While not connected, requests are held (each at most
// LinkOptions::wait, then it fails with Error::Kind::unreachable, EIO at the FUSE edge).
//
// Threads: any thread sends; the connection's I/O thread completes; one worker thread per link
// reconnects, reopens and replays. Lock order: Link::mutex_ is never held while calling into a
// Connection or a request's callback (both may call back into the link).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "client/client_status.hpp"
#include "client/connection.hpp"
#include "client/request.hpp"

namespace sftpfs::client {

struct LinkOptions {
  bool reconnect = true;
  std::chrono::milliseconds wait{20000};       // reconnect_wait: how long a call waits for a link
  std::chrono::milliseconds max_delay{30000};  // reconnect_max_delay: backoff cap (1, 2, 4, ... s)
};

class Link {
 public:
  // Connects (blocking): a mount that cannot connect at all fails rather than waits.
  static Result<std::unique_ptr<Link>> open(size_t index, const ssh::SessionOptions& ssh_options,
                                            const ConnectionOptions& connection_options, const LinkOptions& options);
  ~Link();  // shutdown()
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  void send(Request request);
  // Records an open file so a reconnect reopens it.
  void adopt(const FileRef& file);
  std::vector<FileRef> open_files();

  const ServerFeatures& features() const { return features_; }      // of the first connection
  const ssh::SessionInfo& session_info() const { return session_info_; }
  bool up() const;
  size_t outstanding() const;
  std::chrono::microseconds min_rtt() const;  // the current connection's shortest round trip (0: not yet)
  ConnectionStatus status() const;
  // Fails held requests whose wait is over (the client's ticker calls this every 200 ms).
  void expire_held(Clock::time_point now);
  // No more reconnects: an attempt in progress is abandoned, held and later requests fail.
  void shutdown();
  // Cuts the current TCP connection as a network drop would (tests, and `--status`-free debugging).
  void cut();

 private:
  Link(size_t index, ssh::SessionOptions ssh_options, ConnectionOptions connection_options, LinkOptions options);
  using State = ConnectionStatus::State;

  ConnectionOptions options_for(uint64_t generation);
  void submit(const std::shared_ptr<Connection>& connection, uint64_t generation, Request request);
  void on_reply(uint64_t generation, Request request, Result<sftp::Reply> reply);
  void deliver(Request request, Result<sftp::Reply> reply);
  void mark_down_locked(uint64_t generation, const std::string& reason);
  void hold_locked(Request request);
  void run();
  void replay_locked(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Connection>& fresh,
                     std::deque<Request> batch, size_t& replayed);
  std::shared_ptr<Connection> reconnect();
  bool reopen_files(Connection& connection, size_t& reopened);
  void fail_requests(std::deque<Request> requests, const Error& error);
  Error unreachable() const;  // mutex_ held

  const size_t index_;
  const std::shared_ptr<std::atomic<bool>> cancel_;  // set at shutdown: a connect in progress gives up
  const ssh::SessionOptions ssh_options_;            // with cancel_

  const ConnectionOptions connection_options_;
  const LinkOptions options_;
  ServerFeatures features_;
  ssh::SessionInfo session_info_;
  std::atomic<uint64_t> next_sequence_{1};

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<Connection> connection_;
  uint64_t generation_ = 0;
  State state_ = State::connected;
  bool replaying_ = false;  // held requests still being resent: new ones queue behind them
  bool stopping_ = false;
  std::deque<Request> held_;
  std::vector<std::weak_ptr<RemoteFile>> files_;
  std::string last_error_;
  std::chrono::system_clock::time_point since_ = std::chrono::system_clock::now();
  Clock::time_point down_since_{};
  uint64_t reconnects_ = 0, attempts_ = 0;
  uint64_t bytes_sent_before_ = 0, bytes_received_before_ = 0, bytes_in_place_before_ = 0;  // of connections replaced
  std::thread worker_;
};

}  // namespace sftpfs::client
