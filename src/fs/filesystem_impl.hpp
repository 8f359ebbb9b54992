// Filesystem::Impl, shared by the files that implement the FUSE operations (one concern each):
//   filesystem.cpp       construction, init, mount, serve() and the fuse_lowlevel_ops table
//   handle_registry.cpp  open file and directory handles, outstanding client calls
//   attributes.cpp       getattr, setattr, statfs and the kernel's view of attributes
//   names.cpp            lookup, forget, readlink, mknod, symlink, unlink, rename, link; entry replies
//   directories.cpp      mkdir, rmdir, opendir, readdir(plus), releasedir, listings read ahead
//   file_io.cpp          open, create, read, flush, release, fsync, copy_file_range
//   write_behind.cpp     write, write floors, writes striped over lanes, waiting for writes in flight
//   early_answers.cpp    attribute changes answered before the server confirms them (rule 6)
//   flush_read_back.cpp  a file's attributes asked at flush behind its writes, cached after close
//   small_file_readahead.cpp  whole small files read ahead while a program walks a directory
// Internal to src/fs: nothing outside this directory includes it.
//
// Every operation checks its arguments, issues client calls and returns; the reply to the kernel is
// made from the completion callback, on a connection's I/O thread. No thread ever waits on the
// network: the FUSE loop threads only dispatch.
//
// Lock order: there is none to get wrong, by design. Every mutex here (inode table, each cache, each
// handle, the handle registry, the write floors, the call counter) is a leaf: code holding one takes
// no other, calls no client function and replies to no request while holding it.
#pragma once

#include <linux/fs.h>  // RENAME_NOREPLACE, RENAME_EXCHANGE
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <optional>
#include <unordered_map>

#include "fs/attr_map.hpp"
#include "fs/cache.hpp"
#include "fs/errno_edge.hpp"
#include "fs/filesystem.hpp"
#include "fs/fuse_api.hpp"
#include "fs/handles.hpp"
#include "fs/inode_table.hpp"
#include "fs/prefetcher.hpp"
#include "fs/small_file_readahead.hpp"
#include "fs/symlink_rewrite.hpp"
#include "fs/write_order.hpp"
#include "util/log.hpp"

namespace sftpfs::fs {

// Bytes a handle may have sent and not yet confirmed before the kernel's write requests wait for
// their own replies: covers 100 MB/s at 80 ms RTT, bounded so a slow server cannot make us buffer
// a whole file. A handle writing over several connections may have this much per connection.
constexpr uint64_t kWriteBehindBytes = 8u << 20;
// max_conns > 1: after this many bytes written through a handle, the file is opened for writing on
// the other connections too (a small file is not worth the extra OPENs), and writes are spread over
// them in granules of this size (the kernel's largest write, so one kernel write is one piece).
constexpr uint64_t kWriteStripeAfter = 8u << 20;
constexpr uint64_t kWriteStripeGranule = 1u << 20;
// Extra SFTP channels are opened for a write stream only at round trips at least this long (see
// maybe_open_write_stripes).
constexpr std::chrono::milliseconds kChannelWindowMattersRtt{5};
// READDIR requests in flight on one directory handle: 8 at first (a small directory costs at most 7
// tiny requests answered with a bare EOF), two more for every reply that carried entries, up to 64:
// the window triples each round trip, so a 10,000-entry directory (OpenSSH sends up to 100 entries
// per reply) takes ~3 round trips instead of 100 one at a time or 25 with a fixed 4.
constexpr int kReaddirInitialInFlight = 8;
constexpr int kReaddirGrowth = 2;
constexpr int kReaddirMaxInFlight = 64;
// NAME_MAX: longer names are refused before anything is sent.
constexpr size_t kNameMax = 255;
// How long an unmount lets outstanding calls finish before stopping the client (which fails them).
constexpr std::chrono::seconds kUnmountGraceConnected{10};
constexpr std::chrono::seconds kUnmountGraceDisconnected{1};
// stat of the mount point and statfs answer from last known values after this long without a reply.
constexpr std::chrono::milliseconds kLastKnownAfter{1000};
// d_ino for a plain READDIR entry that has no node yet (as libfuse's high-level API uses).
constexpr ino_t kUnknownIno = 0xffffffff;
// Largest WRITE the kernel sends us; the client splits it into pipelined SFTP WRITEs.
constexpr unsigned kMaxWrite = 1u << 20;

inline double seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

inline bool name_too_long(const char* name) { return std::strlen(name) > kNameMax; }

inline bool is_status(const Error& e, uint32_t code) {
  return e.kind == Error::Kind::sftp_status && e.code == code;
}

// Two requests sent back to back; `done(first, second)` runs once both have answered, on the thread
// of the later answer.
template <class A, class B>
std::pair<std::function<void(A)>, std::function<void(B)>> joined(std::function<void(A, B)> done) {
  struct State {
    std::mutex mutex;
    std::optional<A> a;
    std::optional<B> b;
    int left = 2;
    std::function<void(A, B)> done;
  };
  auto state = std::make_shared<State>();
  state->done = std::move(done);
  auto first = [state](A a) {
    {
      std::lock_guard lock(state->mutex);
      state->a.emplace(std::move(a));
      if (--state->left != 0) return;
    }
    state->done(std::move(*state->a), std::move(*state->b));
  };
  auto second = [state](B b) {
    {
      std::lock_guard lock(state->mutex);
      state->b.emplace(std::move(b));
      if (--state->left != 0) return;
    }
    state->done(std::move(*state->a), std::move(*state->b));
  };
  return {first, second};
}

struct Filesystem::Impl {
  Impl(std::shared_ptr<client::Client> c, FsOptions o)
      : client(std::move(c)),
        opt(std::move(o)),
        inodes(opt.remote_root),
        caches(cache_config(opt), steady_clock_fn()),
        prefetch_budget(std::make_shared<PrefetchBudget>(opt.prefetch ? opt.prefetch_budget : 0)) {
    entry_timeout = opt.cache ? seconds(opt.entry_timeout) : 0.0;
    attr_timeout = opt.cache ? seconds(opt.attr_timeout) : 0.0;
    // A missing name is never remembered longer than a present one: "other clients' changes show
    // within the cache timeout" must hold for creations too.
    negative_timeout = opt.cache ? std::min({seconds(opt.negative_timeout), entry_timeout, seconds(opt.dir_timeout)}) : 0.0;
    small_files = std::make_shared<SmallFileReadAhead>(*this);
  }

  static Caches::Config cache_config(const FsOptions& o) {
    Caches::Config c;
    if (o.cache) {
      c.attr_ttl = o.attr_timeout;
      c.dir_ttl = o.dir_timeout;
      c.negative_ttl = std::min({o.negative_timeout, o.entry_timeout, o.dir_timeout});
      c.max_dirs = std::max<size_t>(1, o.dir_cache_max_entries);
    }
    return c;
  }

  std::shared_ptr<client::Client> client;
  FsOptions opt;
  InodeTable inodes;
  Caches caches;
  double entry_timeout = 0, attr_timeout = 0, negative_timeout = 0;
  std::shared_ptr<PrefetchBudget> prefetch_budget;
  std::shared_ptr<SmallFileReadAhead> small_files;  // whole small files read ahead during a walk

  struct fuse_session* session = nullptr;
  bool mounted = false;
  bool signals_set = false;
  std::string mountpoint;

  // ---- outstanding client calls: the filesystem is not torn down while a callback may still run ----
  std::mutex calls_mutex;  // leaf
  std::condition_variable calls_cv;
  uint64_t calls = 0;

  std::atomic<uint64_t> calls_started{0};  // Filesystem::activity()
  void begin_call() {
    calls_started.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(calls_mutex);
    ++calls;
  }
  void end_call() {
    std::lock_guard lock(calls_mutex);
    if (--calls == 0) calls_cv.notify_all();
  }
  void wait_for_calls();
  // At unmount: waits for outstanding calls (writes still going out) a while, longer while the server
  // is reachable; then stops the client, which fails whatever still waits for a reconnect, and waits
  // for the rest. So an unmount is prompt in every state of the connection.
  void finish_calls();
  bool wait_for_calls_until(std::chrono::steady_clock::time_point deadline);
  uint64_t outstanding_calls() {
    std::lock_guard lock(calls_mutex);
    return calls;
  }

  // What the mount point and df show while the server is unreachable (never a hang): last known.
  std::mutex last_known_mutex;  // leaf
  std::optional<sftp::Attrs> last_root_attrs;
  std::optional<struct statvfs> last_statvfs;
  // Unmounted: listings stop fetching (one being read ahead could otherwise hold up the exit for as
  // long as the server keeps sending names).
  std::atomic<bool> stopping{false};
  // Wraps a completion callback so the call counts as outstanding until the callback has run.
  template <class F>
  auto tracked(F f) {
    begin_call();
    return [this, f = std::move(f)](auto result) mutable {
      f(std::move(result));
      end_call();
    };
  }

  // ---- handle registry ----
  std::mutex handles_mutex;  // leaf
  std::unordered_map<HandleBase*, std::shared_ptr<HandleBase>> handles;
  std::unordered_map<Ino, std::vector<std::weak_ptr<FileHandle>>> open_files;

  uint64_t register_handle(std::shared_ptr<HandleBase> h, Ino ino);
  std::shared_ptr<HandleBase> unregister_handle(uint64_t fh);
  std::shared_ptr<FileHandle> file_handle(const fuse_file_info* fi);
  std::shared_ptr<DirHandle> dir_handle(const fuse_file_info* fi);
  std::vector<std::shared_ptr<FileHandle>> files_of(Ino ino);

  // ---- writes in flight per connection, and the renames/removals that can change what a path names ----
  WriteOrder write_order;
  // A name change through this mount is running or happened: an extra handle opened by path while it
  // could have run might be another file. Counted from before the request is sent to after its reply.
  std::atomic<uint64_t> namespace_changes{0};
  std::atomic<bool> append_flag_refused{false};  // the server refused SSH_FXF_APPEND once (open_now)
  std::atomic<int> plain_rename_refuses{0};  // plain RENAME onto an existing name: 1 refused, -1 replaced, 0 unknown
  std::atomic<int> namespace_changes_running{0};
  struct NamespaceChange {
    explicit NamespaceChange(Impl* i) : impl(i) {
      impl->namespace_changes_running.fetch_add(1);
      impl->namespace_changes.fetch_add(1);
    }
    ~NamespaceChange() {
      impl->namespace_changes.fetch_add(1);
      impl->namespace_changes_running.fetch_sub(1);
    }
    NamespaceChange(const NamespaceChange&) = delete;
    NamespaceChange& operator=(const NamespaceChange&) = delete;
    Impl* impl;
  };

  // ---- write floors: while writes to an inode are in flight the server's size lags behind what the
  // application wrote; the size we report is never below what was acknowledged. A floor stays after
  // the writes are answered until attributes asked for after that arrive (or this mount truncates
  // the file): a stat answered before the writes were applied must not shrink the file. ----
  struct Floor {
    uint64_t size = 0;
    uint64_t pending = 0;
    uint64_t done_at = 0;  // write_epoch when the last write was answered; 0 while any is in flight
  };
  std::mutex floors_mutex;  // leaf
  std::unordered_map<Ino, Floor> floors;
  std::atomic<uint64_t> write_epoch{1};  // counts "every write to some file was answered" moments
  // Each change this mount makes to a file's data or attributes (a write placed, a setattr, an early
  // answer, a truncating open) gives the inode a new number from one counter: attributes asked for
  // at one number are current while the inode still has it. Guarded by floors_mutex.
  std::unordered_map<Ino, uint64_t> local_changes;
  uint64_t last_local_change = 0;
  // Bytes of every handle's writes sent and not yet answered, against opt.write_behind_budget.
  std::atomic<uint64_t> write_behind_used{0};

  void floor_write_sent(Ino ino, uint64_t end, uint64_t bytes);
  void floor_write_done(Ino ino, uint64_t bytes);
  void floor_truncate(Ino ino, uint64_t size);
  // A truncation or an O_TRUNC open through this mount: open handles' written_end (FileHandle) clamped.
  void truncated_through_mount(Ino ino, uint64_t size);
  std::optional<uint64_t> floor_of(Ino ino);
  bool writes_in_flight(Ino ino);
  // Attributes asked for at write_epoch `asked_at` arrived: they include every write answered before,
  // so a floor whose writes were all answered by then goes. True when no floor is left (the
  // attributes may be cached as they are).
  bool floor_confirmed(Ino ino, uint64_t asked_at);
  void note_local_change(Ino ino);
  uint64_t local_change_of(Ino ino);

  // ---- data freshness: prefetched bytes and size hints of open files ----

  // Something this mount did changed the file's bytes (write, truncation, server-side copy): drop
  // what every open handle of it prefetched.
  void data_changed(Ino ino);

  // Attributes of a regular file arrived: a size or mtime other than the one an open handle saw means
  // the file changed (possibly elsewhere), so its prefetched bytes may be stale.
  void note_file_attrs(Ino ino, const sftp::Attrs& attrs);

  // Reads [off, off+length) exactly as client->read does (short only at end of file). When the
  // handle expects the file to end inside the range, the part before the end and the part after go
  // out together: the end of file is then learned in the same round trip instead of by a second READ
  // after a short reply.
  void read_range(const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length,
                  client::Callback<sftp::Bytes> done);

  // Segments of a long sequential read, spread over every connection (see FileHandle::stripes).
  static constexpr uint64_t kStripeAfter = 8u << 20;  // only reads this long are worth extra OPENs
  void read_segment(const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length,
                    client::Callback<sftp::Bytes> done);

  // A read must not overtake a write of the same bytes still in flight on another connection: it
  // waits for it (WriteOrder), or goes behind it when it is on the read's own connection.
  void read_range_on(const std::shared_ptr<FileHandle>& h, const client::FileRef& remote, uint64_t off,
                     uint32_t length, client::Callback<sftp::Bytes> done);
  void read_range_now(const std::shared_ptr<FileHandle>& h, const client::FileRef& remote, uint64_t off,
                      uint32_t length, client::Callback<sftp::Bytes> done);
  void direct_read(fuse_req_t req, const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length);

  // ---- replies ----
  void reply_error(fuse_req_t req, const Error& e);

  // The kernel's view of attributes: link count learned before, size floor while writes are in flight.
  Result<struct stat> kernel_stat(Ino ino, const sftp::Attrs& attrs, uint32_t nlink_hint);
  void reply_attr(fuse_req_t req, Ino ino, const sftp::Attrs& attrs, uint32_t nlink_hint = 0);
  // The same, for attributes known to be partly stale (an mtime the server has since moved): the
  // kernel keeps them for no time and asks again at the next stat.
  void reply_attr_uncached(fuse_req_t req, Ino ino, const sftp::Attrs& attrs);

  // Fills an entry for parent/name, taking one lookup reference. Returns the node, or nullopt (and an
  // errno in *err) when the entry cannot be made.
  std::optional<Ino> make_entry(Ino parent, const std::string& name, const sftp::Attrs& attrs, uint32_t nlink_hint,
                                fuse_entry_param& e, int* err);
  void reply_entry(fuse_req_t req, Ino parent, const std::string& name, const sftp::Attrs& attrs,
                   uint32_t nlink_hint = 0);
  void reply_negative(fuse_req_t req);
  // A negative entry from what the server said `age` ago: the kernel keeps it only for the rest of
  // negative_timeout.
  void reply_negative(fuse_req_t req, std::chrono::milliseconds age);
  // The node lost a name (unlink, or a rename over it): what is cached for its other names is stale.
  void names_lost_link(Ino ino);
  // The node's attributes or data changed: what is cached under each of its names is stale (a file
  // with hard links made through this mount has several).
  void node_changed(Ino ino);
  // A SETATTR `r` succeeded on the node (`before`: its attributes before, when known): as
  // node_changed, but a directory keeps its listing when the change cannot alter what it lists.
  void attributes_changed(Ino ino, const SetattrRequest& r, const std::optional<sftp::Attrs>& before);

  // ---- small client helpers ----
  void stat_path(const std::string& path, client::Callback<sftp::Attrs> done);

  // Attributes of a node: the cache, else the server (by path, or through an open handle when the
  // node has no path any more: an unlinked open file).
  void node_attrs(Ino ino, const fuse_file_info* fi, client::Callback<sftp::Attrs> done);
  void close_quietly(const client::FileRef& file);

  // Whether a directory has entries besides . and .. (for the ENOTEMPTY that servers report as FAILURE).
  void dir_has_entries(const std::string& path, std::function<void(Result<bool>)> done);
  void read_until_entry(client::FileRef dir, std::shared_ptr<ListingGuard> guard, std::function<void(Result<bool>)> done);

  // Runs `fn` once no write to `ino` is in flight on any handle.
  void when_inode_drained(Ino ino, std::function<void()> fn);
  void when_drained(const std::shared_ptr<FileHandle>& h, std::function<void()> fn);
  std::optional<Error> take_write_error(const std::shared_ptr<FileHandle>& h);

  // ---- early answers (early_answers.cpp) ----
  // An open handle through which attribute changes of `ino` may be answered early: made by this
  // mount's CREATE, writable, not released, no failure pending. nullptr when there is none.
  std::shared_ptr<FileHandle> early_change_handle(Ino ino);
  // A handle of `ino` with early changes not yet confirmed by the server, or nullptr.
  std::shared_ptr<FileHandle> handle_with_early_changes(Ino ino);
  // Answers `req` now with `current` changed by `sent`, sends the change unwaited, and keeps its
  // failure for the handle's next write, flush, fsync or close. false: not a case for it.
  bool answer_setattr_early(fuse_req_t req, Ino ino, const SetattrRequest& r, const sftp::Attrs& sent);

  // ---- attributes read back at flush (flush_read_back.cpp) ----
  struct ReadBack;
  // Sends one FSTAT behind the handle's writes (same connection, so answered after them) when it
  // wrote since its last read-back; nullptr when there is nothing to ask or it cannot be ordered.
  std::shared_ptr<ReadBack> read_back_at_flush(const std::shared_ptr<FileHandle>& h);
  // The same FSTAT, asked whatever was written (a stat of the open file); nullptr: cannot be ordered.
  std::shared_ptr<ReadBack> start_read_back(const std::shared_ptr<FileHandle>& h);
  // An open handle of the file that wrote since its last read-back, if any.
  std::shared_ptr<FileHandle> handle_to_read_back(Ino ino);
  void when_read_back(const std::shared_ptr<ReadBack>& rb, std::function<void(Result<sftp::Attrs>)> fn);
  // The flush succeeded: cache what the read-back saw, unless the mount changed the file since.
  void keep_read_back(const std::shared_ptr<FileHandle>& h, const ReadBack& rb, const sftp::Attrs& attrs);
  // Whether the cached read-back is still the file's state (release then keeps the cache).
  bool read_back_current(const std::shared_ptr<FileHandle>& h);

  // ================= operations =================

  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, Ino parent, const char* name);
  // `may_wait`: a listing of the parent being read is waited for instead of sending an LSTAT.
  void lookup_name(fuse_req_t req, Ino parent, const std::string& name, bool may_wait);
  void forget(Ino ino, uint64_t nlookup);
  void getattr(fuse_req_t req, Ino ino, fuse_file_info* fi);
  // access(2) and chdir when the kernel does not check permissions itself (no default_permissions).
  void access(fuse_req_t req, Ino ino, int mask);
  void setattr(fuse_req_t req, Ino ino, const struct stat* attr, int to_set, fuse_file_info* fi);
  void readlink(fuse_req_t req, Ino ino);

  // A creating request (MKDIR, SYMLINK, hardlink) and the LSTAT of its result, sent back to back on
  // one connection: the server answers them in order, so the entry costs one round trip. When the
  // request fails with the catch-all FAILURE, the LSTAT also says whether the name exists (EEXIST).
  using SendCreating = std::function<void(size_t connection, client::Done done)>;
  // `after`: the LSTAT waits for the request's reply instead (a first SYMLINK may take several round
  // trips while its argument order is learned, and may be undone and redone).
  void create_and_stat(fuse_req_t req, Ino parent, const std::string& name, const std::string& path,
                       SendCreating send, std::function<void(fuse_req_t, const sftp::Attrs&)> on_created,
                       bool after = false);
  void mknod(fuse_req_t req, Ino parent, const char* name, mode_t mode, dev_t);
  void mkdir(fuse_req_t req, Ino parent, const char* name, mode_t mode);
  void symlink(fuse_req_t req, const char* target, Ino parent, const char* name);
  void unlink(fuse_req_t req, Ino parent, const char* name);
  void rmdir(fuse_req_t req, Ino parent, const char* name);
  void rename(fuse_req_t req, Ino parent, const char* name, Ino newparent, const char* newname, unsigned flags);
  void link(fuse_req_t req, Ino ino, Ino newparent, const char* newname);

  // ---- files ----

  bool keep_cache_for(const std::string& path);
  // `preloaded`: the whole file, read ahead (SmallFileReadAhead), with `preload_reserved` bytes of the
  // prefetch budget that the handle's prefetcher takes over.
  void finish_open(fuse_req_t req, Ino ino, fuse_file_info* fi, client::FileRef remote, uint64_t size,
                   std::optional<sftp::Attrs> entry_attrs, Ino parent, const std::string& name,
                   std::shared_ptr<const sftp::Bytes> preloaded = nullptr, uint64_t preload_reserved = 0);
  void open(fuse_req_t req, Ino ino, fuse_file_info* fi);
  void open_now(fuse_req_t req, Ino ino, fuse_file_info info, const std::string& path, uint32_t pflags);
  void create(fuse_req_t req, Ino parent, const char* name, mode_t mode, fuse_file_info* fi);
  void release_handle(uint64_t fh);
  void read(fuse_req_t req, Ino, size_t size, off_t off, fuse_file_info* fi);

  // A long write stream also opens the file for writing on the other lanes: the other connections
  // and the extra SFTP channels of each (see kWriteStripeAfter and Client::lane_count). The extra
  // handle must name the same file as the first: it is opened by the node's current path, and kept
  // only if no rename or removal through this mount could have run in between (a rename by another
  // client meanwhile is beyond what SFTP lets us see). A failed OPEN (permissions: a file created
  // read-only) just leaves the stream on the first connection.
  void maybe_open_write_stripes(const std::shared_ptr<FileHandle>& h);

  // The handle's remote file on `lane` (the first handle, or an extra one opened there).
  client::FileRef write_target(const std::shared_ptr<FileHandle>& h, size_t lane);
  void write(fuse_req_t req, Ino, const char* buf, size_t size, off_t off, fuse_file_info* fi);
  void flush(fuse_req_t req, Ino, fuse_file_info* fi);
  // The flush found the file shorter than what was written to it: the writes were lost (EIO).
  void writes_lost(fuse_req_t req, const std::shared_ptr<FileHandle>& handle, uint64_t written_end, const sftp::Attrs& a);
  void release(fuse_req_t req, Ino, fuse_file_info* fi);
  void fsync(fuse_req_t req, Ino, int, fuse_file_info* fi);
  void copy_file_range(fuse_req_t req, fuse_file_info* fi_in, off_t off_in, fuse_file_info* fi_out, off_t off_out,
                       size_t len, int flags);

  // ---- directories ----

  void opendir(fuse_req_t req, Ino ino, fuse_file_info* fi);

  // ---- listings read ahead: a directory walk (find, git status, rm -rf, du) reads one directory
  // after another, two round trips each (OPENDIR, READDIR). When the application reads a directory,
  // its subdirectories' listings are read at once, together; a lookup that misses in a directory
  // without a listing starts reading that listing, so its siblings are answered locally. ----

  // Subdirectories read ahead per directory, and listings read ahead at once: bounds the extra work
  // a directory with many subdirectories causes on the server.
  static constexpr size_t kMaxSubdirsAhead = 256;
  static constexpr size_t kMaxListingsAhead = 256;
  std::mutex ahead_mutex;  // leaf
  std::unordered_map<std::string, std::shared_ptr<DirHandle>> listings_ahead;
  // A walk: the application opens one subdirectory after another of the same parent, each within
  // kSiblingWalk of the last. The next kSiblingsAhead subdirectories' listings are then kept young
  // (read again ahead of the walk when they are not): the ones read with the parent serve a readdir
  // only while young, and a walk that reads files on the way (grep -r) gets to later ones after that.
  static constexpr std::chrono::milliseconds kSiblingWalk{5000};
  static constexpr size_t kSiblingsAhead = 4;
  struct WalkedParent {
    std::chrono::steady_clock::time_point last_open;  // of one of its subdirectories
    size_t position = 0;                              // that subdirectory's place in the parent's listing
  };
  std::unordered_map<std::string, WalkedParent> walked_parents;  // ahead_mutex
  void read_next_siblings_ahead(const std::string& path);

  std::shared_ptr<DirHandle> listing_being_read(const std::string& path);
  // Runs `then` once the listing of `path` being read ahead is complete (and cached, if kept);
  // false, and nothing runs, when no such listing is being read.
  bool when_listing_read(const std::string& path, std::function<void()> then);

  // A kernel directory handle served by a listing that is being read ahead: it completes with it.
  std::shared_ptr<DirHandle> pending_view(const std::shared_ptr<DirHandle>& ahead, Ino ino);
  void copy_completion(DirHandle& from, DirHandle& to);
  // again=true reads it even though a listing of `path` is cached (one too old to answer for absent
  // names: read_listing_again).
  void read_listing_ahead(const std::string& path, bool again = false);
  // A listing that answers for absent names (gcc's misses in its -I directories, make's in its vpath)
  // may do so only within negative_timeout of its reading: past half of that, a lookup it answered
  // starts reading it again (one OPENDIR, READDIRs in flight, CLOSE), and a lookup it is too old to
  // answer does too (beside its own LSTAT), so a directory in use keeps answering locally instead of
  // costing an LSTAT per missing name. Listings above kMaxListingReadAgain entries are not read again.
  static constexpr size_t kMaxListingReadAgain = 5000;
  void read_listing_again(const std::string& dir_path, std::chrono::milliseconds age);
  void read_subdirectories_ahead(const std::string& path, const DirListing& listing);

  // A directory's size (when its attributes are known) says roughly how many entries it has: on
  // Linux file systems about 20-40 bytes each, and OpenSSH answers up to 100 entries per READDIR, so
  // size / 2048 requests in flight read it in about one round trip. Small or unknown: the default.
  int initial_readdir_window(const std::string& path);
  void fetch_more(const std::shared_ptr<DirHandle>& dir);
  void finish_listing(const std::shared_ptr<DirHandle>& dir);
  void readdir(fuse_req_t req, Ino, size_t size, off_t off, fuse_file_info* fi, bool plus);
  void serve_readdir(fuse_req_t req, const std::shared_ptr<DirHandle>& dir, size_t size, off_t off, bool plus);
  void release_dir(uint64_t fh);
  void releasedir(fuse_req_t req, Ino, fuse_file_info* fi);
  void statfs(fuse_req_t req, Ino);
};

}  // namespace sftpfs::fs
