// Whole small files read ahead during a directory walk (grep -r, cp -r, tar c).
//
// Such a walk opens and reads one small file after another: OPEN, then READ, each a round trip the
// application waits for. Once the application has listed a directory and opened two of its small
// regular files, the next files of the listing (up to kPerDirectory, each at most kMaxFileSize) are
// opened and read whole at once (while a walk goes on, already when the application has read a
// directory's whole listing); their handles stay open, so the application's later open of one is
// answered at once with that handle and its reads from the bytes already here (Prefetcher::preload).
//
// Freshness, the rule: bytes served from here were on the server at most `max_age` before the open
// that gets them (min of 2 s and attr_timeout: never older than what the attribute cache may show),
// and they match the size and mtime the mount shows for the file at that open. A file changed
// through this mount (write, truncation, O_TRUNC, a writable open, setattr, rename, unlink) is never
// served from here. A change made elsewhere shows once the mount sees new attributes for the file
// or after max_age, whichever comes first. SFTP v3 mtimes are whole seconds: a same-size rewrite in
// the second the file was last written would keep size and mtime, so files written within the last
// kRecentSeconds (by this machine's clock) are not read ahead (they are likely still being written).
// With cache=no nothing is read ahead.
//
// Lock: one mutex, a leaf (never held while calling the client, the caches or the inode table).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/cache.hpp"
#include "fs/filesystem.hpp"
#include "fs/fuse_api.hpp"
#include "fs/inode_table.hpp"

namespace sftpfs::fs {

class SmallFileReadAhead : public std::enable_shared_from_this<SmallFileReadAhead> {
 public:
  // Files read ahead per directory beyond the application's position: 16 cover 16 files per round
  // trip of the walk, and cost at most 1 MiB in flight per directory.
  static constexpr size_t kPerDirectory = 16;
  // Handles held open on the server for read-ahead at once, all directories together.
  static constexpr size_t kMaxHeld = 64;
  // Larger files are left to the ordinary open and the sequential prefetch.
  static constexpr uint64_t kMaxFileSize = 64u << 10;
  // Opens of small files in a listed directory before the read-ahead starts: one open may be a look
  // at a single file (`ls; cat README`); the second is a walk. While a walk is going on (a file read
  // ahead was served within kWalkGoesOn), the first open in the next directory starts it: a tree of
  // directories with few files each would otherwise pay two opens per directory.
  static constexpr size_t kOpensToStart = 2;
  static constexpr std::chrono::milliseconds kWalkGoesOn{5000};
  static constexpr std::chrono::milliseconds kMaxAge{2000};
  // Files whose mtime is this close to now are not read ahead (see the freshness rule above).
  static constexpr int64_t kRecentSeconds = 2;
  // Directories remembered as listed by the application; entries of the listing looked at per open.
  static constexpr size_t kMaxDirectories = 256;
  static constexpr size_t kMaxScan = 1024;

  explicit SmallFileReadAhead(Filesystem::Impl& fs);
  SmallFileReadAhead(const SmallFileReadAhead&) = delete;
  SmallFileReadAhead& operator=(const SmallFileReadAhead&) = delete;

  bool enabled() const { return enabled_; }
  std::chrono::milliseconds max_age() const { return max_age_; }

  // The application opened the directory `dir` for reading (opendir).
  void directory_opened(const std::string& dir);

  // The application opens `path` (node `ino`) read-only. true: answered (or will be) from a file read
  // ahead; false: open it as usual. Either way the open counts toward starting or continuing the
  // read-ahead of its directory.
  bool open(fuse_req_t req, Ino ino, const fuse_file_info& fi, const std::string& path);

  // The application has read the whole listing of `dir` (node `dir_ino`). While a walk goes on, its
  // first small files are read ahead now, before the first open: in a tree of directories of a few
  // files each, that open would otherwise wait for an OPEN and a READ of its own in every directory.
  void listing_read(Ino dir_ino, const std::string& dir);

  // The file's data or attributes changed through this mount: nothing read ahead of it is served.
  void drop(Ino ino);

  struct Counts {
    uint64_t started = 0;    // files whose OPEN was sent ahead
    uint64_t served = 0;     // opens answered from a file read ahead
    uint64_t discarded = 0;  // read ahead and not served (changed, too old, failed, not asked for)
    size_t held = 0;         // in flight or waiting now
  };
  Counts counts() const;

 private:
  struct Entry;
  using EntryPtr = std::shared_ptr<Entry>;
  // A directory the application listed, and where its walk is.
  struct Directory {
    std::chrono::steady_clock::time_point listed_at;
    DirListing listing;      // the cached listing the positions below refer to
    std::vector<bool> done;  // opened by the application or read ahead, per listing entry
    size_t opens = 0;        // small files of it the application opened itself
    size_t last = 0;         // listing position of the last open (the next one is usually after it)
  };

  // Starts or tops up the directory's read-ahead after the application opened `path`.
  void note_open(Ino ino, const std::string& path, bool served);
  // The files of `dir` (node `parent`) to read ahead: after `opened` (a name the application opened,
  // `served` from here or not), or from the listing's start when nullopt (listing_read).
  void top_up(const std::string& dir, Ino parent, const std::optional<std::string>& opened, bool served);
  // A file read ahead was served within kWalkGoesOn.
  bool walk_goes_on(std::chrono::steady_clock::time_point now) const;
  void fetch(const EntryPtr& e);
  void fetched(const EntryPtr& e, bool ok, std::shared_ptr<const sftp::Bytes> data, std::optional<sftp::Attrs> after);
  // Whether `e` may answer the application's open of node `ino` now; else why not (for the log).
  const char* unusable(const Entry& e, Ino ino);
  void serve(fuse_req_t req, Ino ino, fuse_file_info fi, const EntryPtr& e);
  void discard(const EntryPtr& e, const char* why);
  void sweep();  // discards what is past max_age
  void schedule_sweep();

  Filesystem::Impl& fs_;
  const bool enabled_;
  const std::chrono::milliseconds max_age_;

  mutable std::mutex mutex_;  // leaf; guards below
  std::unordered_map<std::string, EntryPtr> entries_;  // by remote path: in flight or waiting
  std::unordered_map<std::string, Directory> dirs_;
  bool sweep_scheduled_ = false;

  std::atomic<uint64_t> started_{0}, served_{0}, discarded_{0};
  std::atomic<int64_t> last_served_{-(int64_t{1} << 60)};  // steady clock, ms: the last open served from here
};

}  // namespace sftpfs::fs
