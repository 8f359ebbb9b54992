// The FUSE filesystem: kernel requests (FUSE low-level API) become asynchronous client calls; the reply
// to the kernel is made from the completion callback. No thread waits on the network.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "util/result.hpp"

namespace sftpfs::fs {

enum class IdMap { none, user, file };

struct FsOptions {
  std::string remote_root = ".";  // remote directory shown at the mount point (resolved by the CLI)

  // Caches. cache=false is the strictly coherent mode: every lookup and getattr asks the server.
  bool cache = true;                                  // dir_cache=yes|no
  std::chrono::milliseconds attr_timeout{20000};      // attribute cache, kernel attr_timeout
  std::chrono::milliseconds entry_timeout{20000};     // kernel entry_timeout
  std::chrono::milliseconds negative_timeout{5000};   // negative lookups
  std::chrono::milliseconds dir_timeout{20000};       // directory listing cache
  size_t dir_cache_max_entries = 10000;               // dcache_max_size

  // Ownership (sshfs's names)
  IdMap idmap = IdMap::none;
  std::map<uint32_t, uint32_t> uid_map, gid_map;  // remote -> local, for idmap=file
  bool nomap_error = false;                       // nomap=error: unmapped ids are an error
  std::optional<uid_t> uid;                       // uid= : every file shows this owner
  std::optional<gid_t> gid;
  std::optional<mode_t> umask;
  uid_t local_uid = 0;  // for idmap=user: the mounting user ...
  gid_t local_gid = 0;
  std::optional<uint32_t> remote_uid;  // ... and the remote user's ids (learned after connecting)
  std::optional<uint32_t> remote_gid;

  // FUSE
  bool allow_other = false, allow_root = false, default_permissions = false;
  bool kernel_cache = false, auto_cache = false, direct_io = false;
  bool disable_hardlink = false;
  bool follow_symlinks = false;
  bool transform_symlinks = false;  // readlink: absolute targets inside remote_root shown relative
  bool contain_symlinks = false;    // readlink: EPERM for targets that could leave the mount
  uint32_t max_read = 0;  // 0: ours

  // Sequential read prefetching (see fs/prefetcher.hpp). prefetch=false is sshfs's no_readahead.
  bool prefetch = true;
  // Bytes all open files of the mount may have prefetched at once (in flight or buffered): bounds
  // memory with many sequential readers. 0 turns prefetching off. 96 MiB keeps the daemon under
  // 200 MiB with 64 parallel readers, and is three full windows (one file at 400 MB/s x 80 ms each).
  uint64_t prefetch_budget = 96ull << 20;
  // Largest window one file keeps ahead of its reader: must cover bandwidth x RTT (32 MiB: 400 MB/s at
  // 80 ms).
  uint64_t prefetch_max_window = 32ull << 20;
  // Bytes all handles of the mount may have written and had acknowledged to the kernel before the
  // server confirmed them (write-behind). Past it, a write waits for its own reply: many parallel
  // writers then hold at most this much (plus one kernel write each). Each handle also keeps to
  // kWriteBehindBytes (8 MiB) per connection it writes on. 0: every write waits for the server.
  uint64_t write_behind_budget = 64ull << 20;
  std::string fsname;     // shown in /proc/mounts as the source, e.g. "user@host:/path"
  std::string subtype = "sftpfs";
  bool debug = false;     // FUSE debug output (-d)
  bool single_threaded = false;  // -s
  std::vector<std::string> extra_fuse_options;  // passed through to libfuse as -o
};

class Filesystem {
 public:
  static std::unique_ptr<Filesystem> create(std::shared_ptr<client::Client> client, FsOptions options);
  ~Filesystem();

  // Creates the FUSE session and mounts it. An error says what is wrong with the mount point.
  Status mount(const std::string& mountpoint);
  // Serves kernel requests until the filesystem is unmounted or SIGINT/SIGTERM/SIGHUP arrives, then
  // unmounts. Returns the process exit code.
  int serve();

  // For `sftpfs --status` and the idle trimmer (cli/memory.hpp); any thread, never waits on the network.
  struct CacheStats {
    struct One {
      const char* name;
      uint64_t hits = 0, misses = 0;
      size_t entries = 0;
    };
    std::vector<One> caches;  // attributes, listings, negative lookups
    uint64_t prefetch_used = 0, prefetch_budget = 0;          // bytes
    uint64_t write_behind_used = 0, write_behind_budget = 0;  // bytes
    size_t inodes = 0;                                        // nodes the kernel may still ask about
    // Whole small files read ahead during walks: OPENs sent ahead, opens answered from them, files
    // read ahead and not used (changed, too old, never opened), and held now.
    uint64_t small_files_started = 0, small_files_served = 0, small_files_discarded = 0;
    size_t small_files_held = 0;
  };
  CacheStats stats() const;
  const std::shared_ptr<client::Client>& client() const;  // the engine it runs on (--status asks it)
  // Counts the filesystem's requests to the server since the mount: two equal readings mean nothing
  // was asked of the server in between.
  uint64_t activity() const;
  // Drops expired cache entries (they otherwise go only when looked up again). Returns how many went.
  size_t purge_caches();

  struct Impl;

 private:
  explicit Filesystem(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sftpfs::fs
