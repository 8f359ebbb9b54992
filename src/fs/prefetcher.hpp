// Sequential read prefetching for one open file. The kernel's own readahead keeps about 128 KiB in
// flight, which over a link with RTT r caps a read at 128 KiB / r (1.6 MB/s at 80 ms). The prefetcher
// notices a sequential reader and keeps READs in flight ahead of it, in a window that doubles each time
// the reader consumes a segment, up to a cap that covers bandwidth x RTT, within a memory budget shared
// by every file of the mount. Kernel reads are then answered from the prefetched buffers.
//
// It knows nothing of SFTP or FUSE: it is given a fetch function (read these bytes, short only at end
// of file) and answers reads with slices of its buffers, so its window logic is tested without a server.
//
// Never stale, never wrong: invalidate() drops every buffer and every fetch in flight (a write,
// truncation or attribute change on the file); a failed fetch drops everything and the reads waiting for
// it are handed back to the caller to read directly; a read it cannot answer from a fresh sequential
// stream is handed back too.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "sftp/protocol.hpp"
#include "util/result.hpp"

namespace sftpfs::fs {

// Bytes prefetched (in flight or buffered) by every file of one mount, against a limit.
class PrefetchBudget {
 public:
  explicit PrefetchBudget(uint64_t limit) : limit_(limit) {}
  bool try_reserve(uint64_t bytes);
  void release(uint64_t bytes);
  uint64_t used() const { return used_.load(); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

struct PrefetchConfig {
  // First window: a small file or a reader that stops early costs little beyond what it asked.
  uint64_t initial_window = 256u << 10;
  // Cap: bandwidth x RTT with room, 32 MiB = 400 MB/s at 80 ms. More only queues at the server (the
  // connection's channel window, 16 MiB, bounds what is really in flight per connection).
  uint64_t max_window = 32u << 20;
  // One fetch: four SFTP READs of 255 KiB (OpenSSH's largest); bigger segments would make the reader
  // wait longer for the first byte of each, smaller ones cost more bookkeeping per byte.
  uint32_t segment_size = 4 * 255 * 1024;
};

// The largest window a reader over a link with this shortest round trip needs: 400 MB/s (more than one
// connection's crypto carries) for one round trip, at least 4 MiB, at most `configured` (0 = not yet
// measured: `configured`). A window past bandwidth x RTT reads no faster and only holds memory: at 0 ms,
// 32 MiB against 4 MiB cost 15% more CPU per byte read, page faults of a heap grown to hold it.
uint64_t window_for_rtt(std::chrono::microseconds shortest_rtt, uint64_t configured);

class Prefetcher : public std::enable_shared_from_this<Prefetcher> {
 public:
  using FetchDone = std::function<void(Result<sftp::Bytes>)>;
  // Reads [offset, offset+length): fewer bytes only at end of file. `done` may run on any thread, even
  // before fetch returns.
  using Fetch = std::function<void(uint64_t offset, uint32_t length, FetchDone done)>;

  // A served read: slices of prefetched buffers (kept alive by `keep`); fewer bytes than asked = end of
  // file.
  struct Slices {
    std::vector<iovec> iov;
    std::vector<std::shared_ptr<const sftp::Bytes>> keep;
    size_t size = 0;
  };
  // nullopt: not served from prefetched data after all (a fetch failed or the data was invalidated):
  // the caller reads directly.
  using Deliver = std::function<void(std::optional<Slices>)>;

  static std::shared_ptr<Prefetcher> create(PrefetchConfig config, std::shared_ptr<PrefetchBudget> budget, Fetch fetch);
  ~Prefetcher();

  // A kernel read. false: not part of a sequential stream (or no budget): the caller reads directly and
  // `deliver` is never called. true: `deliver` runs exactly once, maybe before read returns.
  bool read(uint64_t offset, uint32_t size, Deliver deliver);

  // Drops every prefetched byte and every fetch in flight; waiting reads get nullopt. The window starts
  // small again.
  void invalidate();

  // A whole file read before the handle was opened (small_file_readahead.hpp): `data` is the file from
  // byte 0 to its end, and `reserved` (data->size() + 1) bytes of the budget, already taken by the
  // caller, now belong to this prefetcher (returned when the data is consumed or dropped). Reads inside
  // the file are answered from it; the end of file is known. Call before the first read.
  void preload(std::shared_ptr<const sftp::Bytes> data, uint64_t reserved);

  // For tests and statistics.
  uint64_t window() const;
  uint64_t buffered() const;  // bytes held or in flight
  size_t segments() const;

  Prefetcher(PrefetchConfig config, std::shared_ptr<PrefetchBudget> budget, Fetch fetch);

 private:
  struct Segment;
  struct Waiting {
    uint64_t offset;
    uint32_t size;
    Deliver deliver;
  };
  struct Ready {
    Deliver deliver;
    std::optional<Slices> slices;
  };
  using SegmentPtr = std::shared_ptr<Segment>;

  // All *_locked functions run with mutex_ held.
  void drop_all_locked(std::vector<Ready>& ready);
  bool issue_locked(uint64_t up_to, std::vector<SegmentPtr>& to_fetch);
  std::optional<Slices> try_serve_locked(uint64_t offset, uint32_t size, bool& pending);
  void serve_waiting_locked(std::vector<Ready>& ready);
  void start(std::vector<SegmentPtr>& to_fetch);
  void on_fetched(const SegmentPtr& segment, Result<sftp::Bytes> result);
  static void run(std::vector<Ready>& ready);

  const PrefetchConfig config_;
  const std::shared_ptr<PrefetchBudget> budget_;
  const Fetch fetch_;

  mutable std::mutex mutex_;  // leaf: never held while fetching or delivering
  std::deque<SegmentPtr> segments_;  // contiguous, ascending; front is the oldest not yet consumed
  uint64_t next_fetch_ = 0;          // end of the last segment
  uint64_t consumed_ = 0;            // highest end of a read answered or waiting
  uint64_t last_end_ = 0;            // end of the previous kernel read (sequential detection)
  bool any_read_ = false;
  uint64_t window_;
  std::optional<uint64_t> eof_;      // end of file seen by a fetch of the current stream
  std::vector<Waiting> waiting_;
};

}  // namespace sftpfs::fs
