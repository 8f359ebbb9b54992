// Keeps a file's writes in order when they travel on several connections.
// "Connection" here means a lane (client::Client::lane_count): a connection's SFTP channel. Channel 0
// of connection i is lane i; the extra channels are further lanes, each its own sftp-server.
//
// SFTP orders requests only within one connection: a WRITE sent on connection B may overtake one sent
// earlier on A. WriteOrder records, per inode, the byte ranges of writes in flight and the connection
// each went on, and decides where (and when) the next request may go:
// - a write that overlaps nothing in flight goes to the caller's preferred connection;
// - a write that overlaps ranges in flight on exactly one connection goes on that one, behind them
//   (the server answers a connection's requests in order), if the caller has a handle there;
// - otherwise it waits (no thread blocks: it is sent by the completion that makes it possible);
// - a read waits while an overlapping write is in flight on another connection.
// Anything overlapping a request that waits waits behind it, so nothing is reordered by waiting.
// Requests that become sendable are sent in the order they were placed, by one thread at a time
// (`drain`), so two writes placed on one connection reach it in that order.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace sftpfs::fs {

class WriteOrder {
 public:
  using Ino = uint64_t;
  using Token = uint64_t;  // names one write in flight; passed back to complete()
  // Sends the write on `connection`; must call complete(ino, token) exactly once when it is answered.
  using SendWrite = std::function<void(size_t connection, Token token)>;
  using SendRead = std::function<void()>;

  // A write of [begin, end) to `ino`. `usable` lists the connections the caller can write on
  // (non-empty); `preferred` is one of them, used when nothing in flight overlaps.
  void write(Ino ino, uint64_t begin, uint64_t end, std::vector<size_t> usable, size_t preferred, SendWrite send);
  // A read of [begin, end) that will go on `connection`: sent at once unless an overlapping write is
  // in flight on another connection or waits.
  void read(Ino ino, uint64_t begin, uint64_t end, size_t connection, SendRead send);
  // The write named by `token` was answered (successfully or not).
  void complete(Ino ino, Token token);

  // For tests and diagnostics.
  size_t writes_in_flight(Ino ino) const;
  size_t waiting(Ino ino) const;

 private:
  struct Range {
    uint64_t begin, end;
    size_t connection;
  };
  struct Waiter {
    bool is_write;
    uint64_t begin, end;
    std::vector<size_t> usable;
    size_t preferred;
    SendWrite send_write;
    SendRead send_read;
  };
  struct InodeState {
    std::map<Token, Range> in_flight;
    std::deque<Waiter> waiting;
  };

  // Where a request may go now, or nullopt: it must wait. `ahead`: how many waiters precede it.
  static bool place(const InodeState& state, size_t ahead, uint64_t begin, uint64_t end,
                    const std::vector<size_t>& usable, size_t preferred, size_t* connection);
  // Records a placed request and queues its send.
  void start_locked(Ino ino, InodeState& state, Waiter&& w, size_t connection);
  // Sends what is ready, in order, unless another thread is already doing so. Called unlocked.
  void drain(std::unique_lock<std::mutex>& lock);

  mutable std::mutex mutex_;  // leaf: never held while sending or calling back
  std::unordered_map<Ino, InodeState> inodes_;
  Token next_token_ = 1;
  std::deque<std::function<void()>> ready_;
  bool draining_ = false;
};

}  // namespace sftpfs::fs
