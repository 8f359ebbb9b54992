// Open file and directory handles. fi->fh holds a HandleBase*; the Filesystem's registry owns the
// object (shared_ptr) from open to release, and every callback in flight holds a shared_ptr too, so a
// handle outlives its release until its last request is answered.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "fs/cache.hpp"
#include "fs/inode_table.hpp"
#include "fs/listing_guard.hpp"
#include "fs/prefetcher.hpp"
#include "util/result.hpp"

namespace sftpfs::fs {

struct HandleBase {
  explicit HandleBase(bool dir) : is_dir(dir) {}
  virtual ~HandleBase() = default;
  const bool is_dir;
};

// Write-behind: a WRITE is acknowledged to the kernel as soon as it is sent, while the bytes sent and
// not yet answered stay within kWriteBehindBytes; past that, the kernel's request is answered when
// its own WRITE is. The first failure is kept and reported at the next write, flush, fsync or close.
struct FileHandle : HandleBase, std::enable_shared_from_this<FileHandle> {
  FileHandle(Ino i, client::FileRef r, bool w, bool a) : HandleBase(false), ino(i), remote(std::move(r)), writable(w), append(a) {}

  const Ino ino;
  const client::FileRef remote;
  const bool writable;
  const bool append;  // O_APPEND: we write at our own idea of the end (servers ignore the flag)
  bool created = false;  // made by this mount's CREATE (set before the handle is registered)

  std::mutex mutex;  // guards below; leaf lock
  uint64_t in_flight = 0;                   // bytes sent and not yet answered
  std::optional<Error> first_error;         // first failed write, until reported by flush/fsync
  uint64_t append_offset = 0;               // for append: where the next write goes
  std::vector<std::function<void()>> drained_waiters;  // run once in_flight and early_changes reach 0
  // Attribute changes answered to the application before the server confirmed them (rule 6,
  // early_answers.cpp): flush, fsync and close wait for them like for writes, and report their errors.
  unsigned early_changes = 0;
  // For a created handle: the file's attributes as of the create or the last early answer, and how
  // many bytes had been written through the handle then (a write since moves the server's mtime).
  std::optional<sftp::Attrs> early_base;
  uint64_t early_base_written = 0;
  bool drained() const { return in_flight == 0 && early_changes == 0; }  // mutex held
  // Writes into a file that existed (opened without O_TRUNC, not created): some servers (rclone)
  // acknowledge writes at an offset on a reopened file and drop them. FLUSH then compares the
  // server's size (one FSTAT after the writes) with the end of what was written. Guarded by mutex.
  bool verify_size = false;
  uint64_t written_end = 0;  // highest offset + length written since the last check
  // Attributes read back at flush, right behind the writes (flush_read_back.cpp): the inode's local
  // change sequence they were asked at (0: none cached that way), and bytes_written then.
  uint64_t read_back_seq = 0;
  uint64_t read_back_written = 0;

  // Where the file is expected to end (kUnknownSize: no idea). Only an optimisation: a read that
  // crosses it is sent as two READs at once, so the end of file costs no second round trip; the
  // bytes returned are exact whatever the file's real size.
  static constexpr uint64_t kUnknownSize = UINT64_MAX;
  std::atomic<uint64_t> size_hint{kUnknownSize};
  std::shared_ptr<Prefetcher> prefetcher;  // set at open for readable handles; never replaced
  // max_conns > 1: a long sequential read also opens the file on the other connections and spreads
  // its prefetch segments over them (each connection has its own I/O thread and server process).
  std::atomic<bool> stripes_requested{false};
  std::vector<client::FileRef> stripes;  // guarded by mutex; the extra handles, closed at release
  bool released = false;                 // guarded by mutex
  // max_conns > 1: a long write stream opens the file for writing on the other connections too and
  // spreads its writes over them (WriteOrder keeps overlapping writes in order). Not for O_APPEND.
  uint64_t bytes_written = 0;                  // guarded by mutex
  bool write_stripes_requested = false;        // guarded by mutex
  std::vector<client::FileRef> write_stripes;  // guarded by mutex; closed at release
};

// A directory read in full when opened (several READDIRs in flight), then served from memory; a fresh
// listing from the cache serves without any request.
struct DirHandle : HandleBase, std::enable_shared_from_this<DirHandle> {
  DirHandle(Ino i, std::string p) : HandleBase(true), ino(i), path(std::move(p)), guard(path) {}

  const Ino ino;  // 0: a listing read ahead of the application (no kernel handle)
  const std::string path;
  uint64_t stamp = 0;  // Caches::listing_stamp() when reading began

  std::mutex mutex;  // guards below; leaf lock
  client::FileRef remote;  // open while fetching; closed at the end of the directory
  bool complete = false;
  std::optional<Error> error;
  DirListing listing;
  std::vector<std::function<void()>> on_complete;
  // Fetch state: READDIR replies are kept by the order they were sent in.
  uint64_t issued = 0;
  int in_flight_limit = 8;  // grows while replies carry entries (see kReaddirMaxInFlight)
  // The listing is whole once a READDIR said EOF and every READDIR sent before it was answered;
  // those sent after it (in flight meanwhile) are not waited for: they can only say EOF too.
  std::optional<uint64_t> eof_seq;  // the first one answered with EOF, by order sent
  std::set<uint64_t> unanswered;    // sent and not answered (in flight), by order sent
  bool finished = false;            // finish_listing ran (or is running): later replies are ignored
  std::map<uint64_t, std::vector<sftp::NameEntry>> batches;
  ListingGuard guard;  // filters each batch as it arrives; ends a listing that would never end
};

}  // namespace sftpfs::fs
