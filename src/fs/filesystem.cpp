// The FUSE low-level operations. Every operation checks its arguments, issues client calls and
// returns; the reply to the kernel is made from the completion callback, on a connection's I/O thread.
// No thread ever waits on the network: the FUSE loop threads only dispatch.
//
// Lock order: there is none to get wrong, by design. Every mutex here (inode table, each cache, each
// handle, the handle registry, the write floors, the call counter) is a leaf: code holding one takes
// no other, calls no client function and replies to no request while holding it.
#include "fs/filesystem.hpp"

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
#include <unordered_map>

#include "fs/attr_map.hpp"
#include "fs/cache.hpp"
#include "fs/errno_edge.hpp"
#include "fs/fuse_api.hpp"
#include "fs/handles.hpp"
#include "fs/inode_table.hpp"
#include "fs/prefetcher.hpp"
#include "fs/write_order.hpp"
#include "util/log.hpp"

namespace sftpfs::fs {

namespace {

// Bytes a handle may have sent and not yet confirmed before the kernel's write requests wait for
// their own replies: covers 100 MB/s at 80 ms RTT, bounded so a slow server cannot make us buffer
// a whole file. A handle writing over several connections may have this much per connection.
constexpr uint64_t kWriteBehindBytes = 8u << 20;
// max_conns > 1: after this many bytes written through a handle, the file is opened for writing on
// the other connections too (a small file is not worth the extra OPENs), and writes are spread over
// them in granules of this size (the kernel's largest write, so one kernel write is one piece).
constexpr uint64_t kWriteStripeAfter = 8u << 20;
constexpr uint64_t kWriteStripeGranule = 1u << 20;
// READDIR requests in flight on one directory handle: 8 at first (a small directory costs at most 7
// tiny requests answered with a bare EOF), two more for every reply that carried entries, up to 64:
// the window triples each round trip, so a 10,000-entry directory (OpenSSH sends up to 100 entries
// per reply) takes ~3 round trips instead of 100 one at a time or 25 with a fixed 4.
constexpr int kReaddirInitialInFlight = 8;
constexpr int kReaddirGrowth = 2;
constexpr int kReaddirMaxInFlight = 64;
// NAME_MAX: longer names are refused before anything is sent.
constexpr size_t kNameMax = 255;
// d_ino for a plain READDIR entry that has no node yet (as libfuse's high-level API uses).
constexpr ino_t kUnknownIno = 0xffffffff;
// Largest WRITE the kernel sends us; the client splits it into pipelined SFTP WRITEs.
constexpr unsigned kMaxWrite = 1u << 20;

double seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

bool name_too_long(const char* name) { return std::strlen(name) > kNameMax; }

bool is_status(const Error& e, uint32_t code) {
  return e.kind == Error::Kind::sftp_status && e.code == code;
}

uint32_t open_pflags(int flags) {
  uint32_t p = 0;
  switch (flags & O_ACCMODE) {
    case O_RDONLY: p = sftp::SSH_FXF_READ; break;
    case O_WRONLY: p = sftp::SSH_FXF_WRITE; break;
    default: p = sftp::SSH_FXF_READ | sftp::SSH_FXF_WRITE; break;
  }
  if (flags & O_TRUNC) p |= sftp::SSH_FXF_TRUNC;
  if (flags & O_APPEND) p |= sftp::SSH_FXF_APPEND;
  return p;
}

std::string escape_option(const std::string& value) {
  // libfuse's option parser splits on ',' and takes '\' as an escape.
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
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

}  // namespace

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

  struct fuse_session* session = nullptr;
  bool mounted = false;
  bool signals_set = false;
  std::string mountpoint;

  // ---- outstanding client calls: the filesystem is not torn down while a callback may still run ----
  std::mutex calls_mutex;  // leaf
  std::condition_variable calls_cv;
  uint64_t calls = 0;

  void begin_call() {
    std::lock_guard lock(calls_mutex);
    ++calls;
  }
  void end_call() {
    std::lock_guard lock(calls_mutex);
    if (--calls == 0) calls_cv.notify_all();
  }
  void wait_for_calls() {
    std::unique_lock lock(calls_mutex);
    if (calls != 0) LOG_DEBUG("waiting for %llu outstanding requests", static_cast<unsigned long long>(calls));
    calls_cv.wait(lock, [&] { return calls == 0; });
  }
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

  uint64_t register_handle(std::shared_ptr<HandleBase> h, Ino ino) {
    HandleBase* raw = h.get();
    std::lock_guard lock(handles_mutex);
    if (!h->is_dir) open_files[ino].push_back(std::static_pointer_cast<FileHandle>(h));
    handles.emplace(raw, std::move(h));
    return reinterpret_cast<uint64_t>(raw);
  }
  std::shared_ptr<HandleBase> unregister_handle(uint64_t fh) {
    std::lock_guard lock(handles_mutex);
    auto it = handles.find(reinterpret_cast<HandleBase*>(fh));
    if (it == handles.end()) return nullptr;
    auto h = std::move(it->second);
    handles.erase(it);
    if (!h->is_dir) {
      auto f = std::static_pointer_cast<FileHandle>(h);
      auto o = open_files.find(f->ino);
      if (o != open_files.end()) {
        auto& v = o->second;
        v.erase(std::remove_if(v.begin(), v.end(), [&](const std::weak_ptr<FileHandle>& w) {
                  auto s = w.lock();
                  return !s || s == f;
                }), v.end());
        if (v.empty()) open_files.erase(o);
      }
    }
    return h;
  }
  std::shared_ptr<FileHandle> file_handle(const fuse_file_info* fi) {
    if (!fi) return nullptr;
    std::lock_guard lock(handles_mutex);
    auto it = handles.find(reinterpret_cast<HandleBase*>(fi->fh));
    if (it == handles.end() || it->second->is_dir) return nullptr;
    return std::static_pointer_cast<FileHandle>(it->second);
  }
  std::shared_ptr<DirHandle> dir_handle(const fuse_file_info* fi) {
    if (!fi) return nullptr;
    std::lock_guard lock(handles_mutex);
    auto it = handles.find(reinterpret_cast<HandleBase*>(fi->fh));
    if (it == handles.end() || !it->second->is_dir) return nullptr;
    return std::static_pointer_cast<DirHandle>(it->second);
  }
  std::vector<std::shared_ptr<FileHandle>> files_of(Ino ino) {
    std::vector<std::shared_ptr<FileHandle>> out;
    std::lock_guard lock(handles_mutex);
    auto it = open_files.find(ino);
    if (it == open_files.end()) return out;
    for (auto& w : it->second) {
      if (auto s = w.lock()) out.push_back(std::move(s));
    }
    return out;
  }

  // ---- writes in flight per connection, and the renames/removals that can change what a path names ----
  WriteOrder write_order;
  // A name change through this mount is running or happened: an extra handle opened by path while it
  // could have run might be another file. Counted from before the request is sent to after its reply.
  std::atomic<uint64_t> namespace_changes{0};
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
  // application wrote; the size we report is never below what was acknowledged ----
  struct Floor {
    uint64_t size = 0;
    uint64_t pending = 0;
  };
  std::mutex floors_mutex;  // leaf
  std::unordered_map<Ino, Floor> floors;

  void floor_write_sent(Ino ino, uint64_t end, uint64_t bytes) {
    std::lock_guard lock(floors_mutex);
    auto& f = floors[ino];
    f.size = std::max(f.size, end);
    f.pending += bytes;
  }
  void floor_write_done(Ino ino, uint64_t bytes) {
    {
      std::lock_guard lock(floors_mutex);
      auto it = floors.find(ino);
      if (it == floors.end()) return;
      it->second.pending -= std::min(it->second.pending, bytes);
      if (it->second.pending != 0) return;
      floors.erase(it);
    }
    // Attributes fetched while the writes were in flight are older than the file now is.
    if (auto path = inodes.path(ino)) caches.changed(*path);
  }
  void floor_truncate(Ino ino, uint64_t size) {
    std::lock_guard lock(floors_mutex);
    auto it = floors.find(ino);
    if (it != floors.end()) it->second.size = size;
  }
  std::optional<uint64_t> floor_of(Ino ino) {
    std::lock_guard lock(floors_mutex);
    auto it = floors.find(ino);
    if (it == floors.end()) return std::nullopt;
    return it->second.size;
  }

  // ---- data freshness: prefetched bytes and size hints of open files ----

  // Something this mount did changed the file's bytes (write, truncation, server-side copy): drop
  // what every open handle of it prefetched.
  void data_changed(Ino ino) {
    for (auto& h : files_of(ino)) {
      h->size_hint.store(FileHandle::kUnknownSize);
      if (h->prefetcher) h->prefetcher->invalidate();
    }
  }

  // Attributes of a regular file arrived: a size or mtime other than the one an open handle saw means
  // the file changed (possibly elsewhere), so its prefetched bytes may be stale.
  void note_file_attrs(Ino ino, const sftp::Attrs& attrs) {
    if (!attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE) || !attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) return;
    if (inodes.note_data_signature(ino, attrs.size, attrs.mtime)) data_changed(ino);
  }

  // Reads [off, off+length) exactly as client->read does (short only at end of file). When the
  // handle expects the file to end inside the range, the part before the end and the part after go
  // out together: the end of file is then learned in the same round trip instead of by a second READ
  // after a short reply.
  void read_range(const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length,
                  client::Callback<sftp::Bytes> done) {
    read_range_on(h, h->remote, off, length, std::move(done));
  }

  // Segments of a long sequential read, spread over every connection (see FileHandle::stripes).
  static constexpr uint64_t kStripeAfter = 8u << 20;  // only reads this long are worth extra OPENs
  void read_segment(const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length,
                    client::Callback<sftp::Bytes> done) {
    const size_t connections = client->connection_count();
    // Another connection is not ordered behind this one's WRITEs: a READ there could overtake a
    // write still in flight. Stripe only read-only handles while nothing is being written to the file.
    if (connections < 2 || h->writable || floor_of(h->ino)) return read_range(h, off, length, std::move(done));
    if (off >= kStripeAfter && !h->stripes_requested.exchange(true)) {
      for (size_t i = 1; i < connections; ++i) {
        size_t index = (h->remote->connection + i) % connections;
        client->open_on(index, h->remote->path, sftp::SSH_FXF_READ, sftp::Attrs{},
                        tracked([this, h](Result<client::FileRef> r) {
                          if (!r) return;  // the stream goes on over the first connection
                          bool keep = false;
                          {
                            std::lock_guard lock(h->mutex);
                            if (!h->released) {
                              h->stripes.push_back(*r);
                              keep = true;
                            }
                          }
                          if (!keep) close_quietly(*r);
                        }));
      }
    }
    client::FileRef remote = h->remote;
    {
      std::lock_guard lock(h->mutex);
      if (!h->stripes.empty()) {
        size_t slot = static_cast<size_t>(off / (4 * 255 * 1024)) % (h->stripes.size() + 1);
        if (slot != 0) remote = h->stripes[slot - 1];
      }
    }
    read_range_on(h, remote, off, length, std::move(done));
  }

  // A read must not overtake a write of the same bytes still in flight on another connection: it
  // waits for it (WriteOrder), or goes behind it when it is on the read's own connection.
  void read_range_on(const std::shared_ptr<FileHandle>& h, const client::FileRef& remote, uint64_t off,
                     uint32_t length, client::Callback<sftp::Bytes> done) {
    write_order.read(h->ino, off, off + length, remote->connection,
                     [this, h, remote, off, length, done = std::move(done)]() mutable {
                       read_range_now(h, remote, off, length, std::move(done));
                     });
  }

  void read_range_now(const std::shared_ptr<FileHandle>& h, const client::FileRef& remote, uint64_t off,
                      uint32_t length, client::Callback<sftp::Bytes> done) {
    auto learn = [h, off, length](const Result<sftp::Bytes>& r) {
      if (!r) return;
      if (r->size() < length) {
        h->size_hint.store(off + r->size());
      } else if (off + length > h->size_hint.load()) {
        h->size_hint.store(FileHandle::kUnknownSize);
      }
    };
    const uint64_t hint = h->size_hint.load();
    if (hint == FileHandle::kUnknownSize || hint <= off || hint >= off + length) {
      return client->read(remote, off, length,
                          tracked([learn, done = std::move(done)](Result<sftp::Bytes> r) {
                            learn(r);
                            done(std::move(r));
                          }));
    }
    struct Halves {
      std::mutex mutex;
      int left = 2;
      std::optional<Result<sftp::Bytes>> before, after;
    };
    auto halves = std::make_shared<Halves>();
    const uint32_t before_length = static_cast<uint32_t>(hint - off);
    auto joined = [halves, before_length, learn, done = std::move(done)](bool is_before, Result<sftp::Bytes> r) {
      {
        std::lock_guard lock(halves->mutex);
        (is_before ? halves->before : halves->after) = std::move(r);
        if (--halves->left != 0) return;
      }
      Result<sftp::Bytes> before = std::move(*halves->before);
      // The file ends before the expected end (or the read failed): the second part does not count.
      if (!before || before->size() < before_length) {
        learn(before);
        return done(std::move(before));
      }
      Result<sftp::Bytes> after = std::move(*halves->after);
      if (!after) return done(std::move(after));
      before->insert(before->end(), after->begin(), after->end());
      learn(before);
      done(std::move(before));
    };
    auto shared_joined = std::make_shared<decltype(joined)>(std::move(joined));
    client->read(remote, off, before_length,
                 tracked([shared_joined](Result<sftp::Bytes> r) { (*shared_joined)(true, std::move(r)); }));
    client->read(remote, hint, length - before_length,
                 tracked([shared_joined](Result<sftp::Bytes> r) { (*shared_joined)(false, std::move(r)); }));
  }

  void direct_read(fuse_req_t req, const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length) {
    read_range(h, off, length, [this, req](Result<sftp::Bytes> r) {
      // A failed read is an error, never a short read or an end of file.
      if (!r) return reply_error(req, r.error());
      fuse_reply_buf(req, reinterpret_cast<const char*>(r->data()), r->size());
    });
  }

  // ---- replies ----
  void reply_error(fuse_req_t req, const Error& e) {
    int err = errno_edge(e);
    if (err != ENOENT && err != EEXIST) LOG_DEBUG("request failed: %s (errno %d)", e.message.c_str(), err);
    fuse_reply_err(req, err);
  }

  // The kernel's view of attributes: link count learned before, size floor while writes are in flight.
  Result<struct stat> kernel_stat(Ino ino, const sftp::Attrs& attrs, uint32_t nlink_hint) {
    if (nlink_hint != 0) inodes.set_nlink(ino, nlink_hint);
    if (attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) inodes.note_times(ino, attrs.atime, attrs.mtime);
    uint32_t nlink = nlink_hint != 0 ? nlink_hint : inodes.nlink(ino);
    auto st = attrs_to_kernel_stat(attrs, ino, nlink, opt);
    if (!st) return st;
    if (S_ISREG(st->st_mode)) {
      note_file_attrs(ino, attrs);
      if (auto floor = floor_of(ino); floor && static_cast<uint64_t>(st->st_size) < *floor) {
        st->st_size = static_cast<off_t>(*floor);
        st->st_blocks = (st->st_size + 511) / 512;
      }
    }
    return st;
  }

  void reply_attr(fuse_req_t req, Ino ino, const sftp::Attrs& attrs, uint32_t nlink_hint = 0) {
    if (attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) inodes.set_type(ino, attrs.permissions & S_IFMT);
    auto st = kernel_stat(ino, attrs, nlink_hint);
    if (!st) return reply_error(req, st.error());
    fuse_reply_attr(req, &*st, attr_timeout);
  }

  // Fills an entry for parent/name, taking one lookup reference. Returns the node, or nullopt (and an
  // errno in *err) when the entry cannot be made.
  std::optional<Ino> make_entry(Ino parent, const std::string& name, const sftp::Attrs& attrs, uint32_t nlink_hint,
                                fuse_entry_param& e, int* err) {
    mode_t type = attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) ? (attrs.permissions & S_IFMT) : 0;
    auto ino = inodes.link(parent, name, 1, type);
    if (!ino) {
      *err = ENOENT;  // the parent went away meanwhile
      return std::nullopt;
    }
    auto st = kernel_stat(*ino, attrs, nlink_hint);
    if (!st) {
      inodes.forget(*ino, 1);
      *err = errno_edge(st.error());
      return std::nullopt;
    }
    std::memset(&e, 0, sizeof e);
    e.ino = *ino;
    e.generation = 0;  // numbers are never reused within a mount
    e.attr = *st;
    e.attr_timeout = attr_timeout;
    e.entry_timeout = entry_timeout;
    return ino;
  }

  void reply_entry(fuse_req_t req, Ino parent, const std::string& name, const sftp::Attrs& attrs,
                   uint32_t nlink_hint = 0) {
    fuse_entry_param e;
    int err = 0;
    auto ino = make_entry(parent, name, attrs, nlink_hint, e, &err);
    if (!ino) {
      fuse_reply_err(req, err);
      return;
    }
    // If the kernel did not get the reply (interrupted), it holds no reference.
    if (fuse_reply_entry(req, &e) != 0) inodes.forget(*ino, 1);
  }

  void reply_negative(fuse_req_t req) {
    if (negative_timeout > 0) {
      fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      e.ino = 0;  // a negative entry the kernel may cache for entry_timeout
      e.entry_timeout = negative_timeout;
      fuse_reply_entry(req, &e);
    } else {
      fuse_reply_err(req, ENOENT);
    }
  }

  // ---- small client helpers ----
  void stat_path(const std::string& path, client::Callback<sftp::Attrs> done) {
    if (opt.follow_symlinks) {
      client->stat(path, tracked(std::move(done)));
    } else {
      client->lstat(path, tracked(std::move(done)));
    }
  }

  // Attributes of a node: the cache, else the server (by path, or through an open handle when the
  // node has no path any more: an unlinked open file).
  void node_attrs(Ino ino, const fuse_file_info* fi, client::Callback<sftp::Attrs> done) {
    auto path = inodes.path(ino);
    if (path) {
      if (auto cached = caches.attrs.get(*path)) {
        done(cached->attrs);
        return;
      }
    }
    std::shared_ptr<FileHandle> handle = file_handle(fi);
    if (!path && !handle) {
      auto open = files_of(ino);
      if (!open.empty()) handle = open.front();
    }
    if (handle && (!path || fi)) {
      client->fstat(handle->remote, tracked(std::move(done)));
      return;
    }
    if (!path) {
      done(Error::status(sftp::SSH_FX_NO_SUCH_FILE, "inode has no path"));
      return;
    }
    std::string p = *path;
    stat_path(p, [this, p, done = std::move(done)](Result<sftp::Attrs> r) {
      if (r) caches.attrs.put(p, CachedAttrs{*r, 0});
      done(std::move(r));
    });
  }

  void close_quietly(const client::FileRef& file) {
    if (!file) return;
    client->close(file, tracked([path = file->path](Status s) {
      if (!s) LOG_DEBUG("close of %s failed: %s", path.c_str(), s.error().message.c_str());
    }));
  }

  // Whether a directory has entries besides . and .. (for the ENOTEMPTY that servers report as FAILURE).
  void dir_has_entries(const std::string& path, std::function<void(Result<bool>)> done) {
    client->opendir(path, tracked([this, done = std::move(done)](Result<client::FileRef> dir) mutable {
      if (!dir) return done(dir.take_error());
      auto file = *dir;
      read_until_entry(file, std::move(done));
    }));
  }
  void read_until_entry(client::FileRef dir, std::function<void(Result<bool>)> done) {
    client->readdir(dir, tracked([this, dir, done = std::move(done)](Result<std::vector<sftp::NameEntry>> r) mutable {
      if (!r) {
        close_quietly(dir);
        return done(r.take_error());
      }
      if (r->empty()) {
        close_quietly(dir);
        return done(false);
      }
      for (const auto& n : *r) {
        if (n.filename != "." && n.filename != "..") {
          close_quietly(dir);
          return done(true);
        }
      }
      read_until_entry(dir, std::move(done));
    }));
  }

  // Runs `fn` once no write to `ino` is in flight on any handle.
  void when_inode_drained(Ino ino, std::function<void()> fn) {
    auto files = files_of(ino);
    auto remaining = std::make_shared<std::atomic<size_t>>(files.size() + 1);
    auto shared_fn = std::make_shared<std::function<void()>>(std::move(fn));
    auto one_done = [remaining, shared_fn] {
      if (remaining->fetch_sub(1) == 1) (*shared_fn)();
    };
    for (auto& f : files) when_drained(f, one_done);
    one_done();
  }

  void when_drained(const std::shared_ptr<FileHandle>& h, std::function<void()> fn) {
    {
      std::lock_guard lock(h->mutex);
      if (h->in_flight != 0) {
        h->drained_waiters.push_back(std::move(fn));
        return;
      }
    }
    fn();
  }

  std::optional<Error> take_write_error(const std::shared_ptr<FileHandle>& h) {
    std::lock_guard lock(h->mutex);
    auto e = std::move(h->first_error);
    h->first_error.reset();
    return e;
  }

  // ================= operations =================

  void init(fuse_conn_info* conn) {
    auto want = [&](unsigned cap, bool on, const char* why) {
      if (on && (conn->capable & cap)) {
        conn->want |= cap;
      } else {
        conn->want &= ~cap;
      }
      LOG_DEBUG("fuse capability %s: %s", why, (conn->want & cap) ? "on" : "off");
    };
    // Several reads of one file in flight at once: the kernel's readahead overlaps round trips.
    want(FUSE_CAP_ASYNC_READ, true, "async_read");
    // O_TRUNC goes with the OPEN (one request) instead of a separate truncating SETSTAT.
    want(FUSE_CAP_ATOMIC_O_TRUNC, true, "atomic_o_trunc");
    // One READDIR reply fills the kernel's dentries and attributes (ls -l, find: no LSTAT per entry).
    // "auto" lets the kernel fall back to plain readdir when the application does not stat entries.
    want(FUSE_CAP_READDIRPLUS, true, "readdirplus");
    want(FUSE_CAP_READDIRPLUS_AUTO, true, "readdirplus_auto");
    // Lookups and readdirs in one directory run concurrently: each is only a request to the server.
    want(FUSE_CAP_PARALLEL_DIROPS, true, "parallel_dirops");
    // A changed mtime/size seen in attributes drops stale cached pages (other writers on the server).
    // kernel_cache promises the files never change elsewhere, so it turns this off.
    want(FUSE_CAP_AUTO_INVAL_DATA, !opt.kernel_cache, "auto_inval_data");
    // Off: with the writeback cache the kernel decides sizes and mtimes and sends writes long after
    // write() returned, so a server-side error (disk full, quota) could not reach close() and appends
    // would go where the kernel's possibly stale size says; our own write-behind gives the speed
    // without giving that up.
    want(FUSE_CAP_WRITEBACK_CACHE, false, "writeback_cache");
    // Off: symlink targets cached in the page cache are only dropped when the inode goes; a target
    // changed on the server would stay stale. READLINK is one cheap request.
    want(FUSE_CAP_CACHE_SYMLINKS, false, "cache_symlinks");
    // Off: we take no part in locking (SFTP v3 has none); the kernel keeps locks local.
    want(FUSE_CAP_POSIX_LOCKS, false, "posix_locks");
    want(FUSE_CAP_FLOCK_LOCKS, false, "flock_locks");
    // Off: we reply from memory buffers; splicing would not save a copy.
    want(FUSE_CAP_SPLICE_READ, false, "splice_read");
    want(FUSE_CAP_SPLICE_WRITE, false, "splice_write");
    want(FUSE_CAP_SPLICE_MOVE, false, "splice_move");

    // Large requests: fewer kernel round trips; the client splits them into pipelined SFTP requests.
    conn->max_write = kMaxWrite;
    // max_readahead stays what the kernel offered: it can only lower it (read prefetching is ours).
    if (opt.max_read != 0) conn->max_read = opt.max_read;
    // The kernel's default of 12 background requests caps parallel reads (fio iodepth 16 acts like 10
    // on sshfs); each request costs us only a pending SFTP request.
    conn->max_background = 128;
    conn->congestion_threshold = 96;
    // SFTP v3 times are whole seconds.
    conn->time_gran = 1000000000;

  }

  void lookup(fuse_req_t req, Ino parent, const char* name) {
    if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    std::string n = name;
    if (caches.negative.get(*path)) return reply_negative(req);
    if (auto cached = caches.attrs.get(*path)) return reply_entry(req, parent, n, cached->attrs, cached->nlink);
    if (!opt.follow_symlinks) {
      if (auto listed = caches.from_listing(Caches::parent_path(*path), n)) {
        if (!*listed) return reply_negative(req);
        // Listed, but its attributes changed since (unknown here): ask below.
        if ((*listed)->attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) {
          return reply_entry(req, parent, n, (*listed)->attrs, (*listed)->nlink);
        }
      } else {
        // Its siblings will likely be looked up too (git status, make): read the directory, once.
        read_listing_ahead(Caches::parent_path(*path));
      }
      // If the name is a directory, it is usually opened next (ls DIR, cd, a walk): an OPENDIR sent
      // along with the LSTAT saves that round trip; for a file it fails at once, harmlessly.
      read_listing_ahead(*path);
    }
    std::string p = *path;
    stat_path(p, [this, req, parent, n, p](Result<sftp::Attrs> r) {
      if (!r) {
        if (is_status(r.error(), sftp::SSH_FX_NO_SUCH_FILE)) {
          caches.negative.put(p, true);
          return reply_negative(req);
        }
        return reply_error(req, r.error());
      }
      caches.attrs.put(p, CachedAttrs{*r, 0});
      // A listing read ahead that lacks this name is out of date (created elsewhere since): drop it,
      // so the next readdir asks the server.
      const std::string dir_path = Caches::parent_path(p);
      if (caches.dirs.get(dir_path) && !caches.from_listing(dir_path, n)) caches.dirs.invalidate(dir_path);
      reply_entry(req, parent, n, *r);
    });
  }

  void forget(Ino ino, uint64_t nlookup) { inodes.forget(ino, nlookup); }

  void getattr(fuse_req_t req, Ino ino, fuse_file_info* fi) {
    node_attrs(ino, fi, [this, req, ino](Result<sftp::Attrs> r) {
      if (!r) return reply_error(req, r.error());
      reply_attr(req, ino, *r);
    });
  }

  void setattr(fuse_req_t req, Ino ino, const struct stat* attr, int to_set, fuse_file_info* fi) {
    SetattrRequest r;
    if (to_set & FUSE_SET_ATTR_MODE) r.mode = attr->st_mode;
    if (to_set & FUSE_SET_ATTR_UID) r.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) r.gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (attr->st_size < 0) return (void)fuse_reply_err(req, EINVAL);
      r.size = static_cast<uint64_t>(attr->st_size);
    }
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      r.atime.kind = TimeSpec::Kind::now;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      r.atime = {TimeSpec::Kind::value, attr->st_atim.tv_sec};
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      r.mtime.kind = TimeSpec::Kind::now;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      r.mtime = {TimeSpec::Kind::value, attr->st_mtim.tv_sec};
    }
    bool anything = r.mode || r.uid || r.gid || r.size || r.atime.kind != TimeSpec::Kind::omit ||
                    r.mtime.kind != TimeSpec::Kind::omit;
    if (!anything) return getattr(req, ino, fi);  // ctime only: nothing SFTP can set

    auto handle = file_handle(fi);
    auto path = inodes.path(ino);
    if (!path && !handle) {
      auto open = files_of(ino);
      if (!open.empty()) handle = open.front();
    }
    if (!path && !handle) return (void)fuse_reply_err(req, ENOENT);
    bool symlink = S_ISLNK(inodes.type(ino));

    auto start = [this, req, ino, r, handle, path, symlink] {
      std::optional<sftp::Attrs> cached;
      if (path) {
        if (auto c = caches.attrs.get(*path)) cached = c->attrs;
      }
      // `times_only`: current holds only the times last seen (enough to complete half a time pair).
      auto proceed = [this, req, ino, r, handle, path, symlink](std::optional<sftp::Attrs> current, bool times_only) {
        auto attrs = build_setattr(r, current, static_cast<int64_t>(std::time(nullptr)), opt);
        if (!attrs) return reply_error(req, attrs.error());
        sftp::Attrs sent = *attrs;
        // chown to the owner and group the file has (tar does it after every file), without set-id
        // bits that a chown would clear: nothing would change on the server (SFTP carries no ctime).
        if (current && !times_only && opt.cache && sent.flags == sftp::SSH_FILEXFER_ATTR_UIDGID &&
            current->has(sftp::SSH_FILEXFER_ATTR_UIDGID) && current->has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) &&
            current->uid == sent.uid && current->gid == sent.gid && !(current->permissions & (S_ISUID | S_ISGID))) {
          return reply_attr(req, ino, *current);
        }
        // Without a size change and with the attributes we had, the result is known; otherwise the
        // attributes are read back by a request sent right behind the change (same connection,
        // answered in order): still one round trip.
        const bool known_result = current && !times_only && !r.size && opt.cache;
        std::function<void(Status, Result<sftp::Attrs>)> finish =
            [this, req, ino, r, path, current, sent, known_result](Status s, Result<sftp::Attrs> read_back) {
              if (!s) return reply_error(req, s.error());
              if (r.size) {
                floor_truncate(ino, *r.size);
                data_changed(ino);  // reads prefetched while the truncation was on its way
              }
              if (path) caches.changed(*path);
              sftp::Attrs now;
              if (known_result) {
                now = merge_attrs(*current, sent);
              } else {
                if (!read_back) return reply_error(req, read_back.error());
                now = *read_back;
              }
              if (path) caches.attrs.put(*path, CachedAttrs{now, 0});
              reply_attr(req, ino, now);
            };
        // A change must not be overtaken by this file's writes still in flight on another connection:
        // the server would apply such a write after it (moving the mtime tar or cp -p just set). Like a
        // read, it waits for those; writes on its own connection are ahead of it anyway.
        const size_t connection = handle ? handle->remote->connection : client->pick_connection();
        auto send = [this, known_result, handle, path, symlink, sent, connection, finish] {
          if (known_result) {
            auto after = [finish](Status s) { finish(std::move(s), sftp::Attrs{}); };
            if (handle) return client->fsetstat(handle->remote, sent, tracked(after));
            // The link itself, never its target: lsetstat (EOPNOTSUPP when the server lacks it).
            if (symlink) return client->lsetstat_on(connection, *path, sent, tracked(after));
            return client->setstat_on(connection, *path, sent, tracked(after));
          }
          auto [on_set, on_read_back] = joined<Status, Result<sftp::Attrs>>(finish);
          if (handle) {
            client->fsetstat(handle->remote, sent, tracked(on_set));
            client->fstat(handle->remote, tracked(on_read_back));
            return;
          }
          if (symlink) {
            client->lsetstat_on(connection, *path, sent, tracked(on_set));
            client->lstat_on(connection, *path, tracked(on_read_back));
            return;
          }
          client->setstat_on(connection, *path, sent, tracked(on_set));
          if (opt.follow_symlinks) {
            client->stat_on(connection, *path, tracked(on_read_back));
          } else {
            client->lstat_on(connection, *path, tracked(on_read_back));
          }
        };
        write_order.read(ino, 0, UINT64_MAX, connection, std::move(send));
      };
      if (cached || !setattr_needs_current(r)) return proceed(cached, false);
      // Half a time pair (touch -m, tar's futimens with UTIME_OMIT): the other time as last seen.
      bool one_time = (r.atime.kind == TimeSpec::Kind::omit) != (r.mtime.kind == TimeSpec::Kind::omit);
      bool one_id = r.uid.has_value() != r.gid.has_value();
      if (one_time && !one_id) {
        if (auto times = inodes.last_times(ino)) {
          sftp::Attrs known;
          known.set_times(times->first, times->second);
          return proceed(known, true);
        }
      }
      auto fetched = [req, proceed, this](Result<sftp::Attrs> a) {
        if (!a) return reply_error(req, a.error());
        proceed(*a, false);
      };
      if (handle) {
        client->fstat(handle->remote, tracked(fetched));
      } else if (symlink) {
        client->lstat(*path, tracked(fetched));
      } else {
        stat_path(*path, fetched);
      }
    };
    // A truncation must not be overtaken by writes still in flight (they would extend the file again).
    if (r.size) {
      data_changed(ino);
      return when_inode_drained(ino, start);
    }
    start();
  }

  void readlink(fuse_req_t req, Ino ino) {
    auto path = inodes.path(ino);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    client->readlink(*path, tracked([this, req](Result<std::string> r) {
      if (!r) return reply_error(req, r.error());
      fuse_reply_readlink(req, r->c_str());
    }));
  }

  // A creating request (MKDIR, SYMLINK, hardlink) and the LSTAT of its result, sent back to back on
  // one connection: the server answers them in order, so the entry costs one round trip. When the
  // request fails with the catch-all FAILURE, the LSTAT also says whether the name exists (EEXIST).
  using SendCreating = std::function<void(size_t connection, client::Done done)>;
  void create_and_stat(fuse_req_t req, Ino parent, const std::string& name, const std::string& path,
                       SendCreating send, std::function<void(fuse_req_t, const sftp::Attrs&)> on_created) {
    caches.negative.invalidate(path);
    caches.attrs.invalidate(path);
    size_t connection = client->pick_connection();
    auto [on_done, on_stat] = joined<Status, Result<sftp::Attrs>>(
        [this, req, parent, name, path, on_created](Status s, Result<sftp::Attrs> a) {
          if (!s) {
            Error error = s.take_error();
            caches.changed_unknown(path);
            if (is_status(error, sftp::SSH_FX_FAILURE) && a) return (void)fuse_reply_err(req, EEXIST);
            return reply_error(req, error);
          }
          if (!a) {
            caches.changed_unknown(path);
            return reply_error(req, a.error());
          }
          on_created(req, *a);
        });
    send(connection, tracked(on_done));
    client->lstat_on(connection, path, tracked(on_stat));
  }

  void mknod(fuse_req_t req, Ino parent, const char* name, mode_t mode, dev_t) {
    if (!S_ISREG(mode)) return (void)fuse_reply_err(req, EPERM);  // SFTP creates regular files only
    if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    std::string p = *path, n = name;
    sftp::Attrs attrs;
    attrs.set_permissions(mode & 07777);
    uint32_t pflags = sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT | sftp::SSH_FXF_EXCL;
    create_and_stat(
        req, parent, n, p,
        [this, p, pflags, attrs](size_t connection, client::Done done) {
          client->open_on(connection, p, pflags, attrs, [this, done](Result<client::FileRef> r) {
            if (!r) return done(r.take_error());
            close_quietly(*r);
            done({});
          });
        },
        [this, parent, n, p](fuse_req_t rq, const sftp::Attrs& a) {
          caches.added(p, a);
          reply_entry(rq, parent, n, a);
        });
  }

  void mkdir(fuse_req_t req, Ino parent, const char* name, mode_t mode) {
    if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    std::string p = *path, n = name;
    sftp::Attrs attrs;
    attrs.set_permissions(mode & 07777);
    create_and_stat(
        req, parent, n, p,
        [this, p, attrs](size_t connection, client::Done done) { client->mkdir_on(connection, p, attrs, std::move(done)); },
        [this, parent, n, p](fuse_req_t rq, const sftp::Attrs& a) {
          caches.added(p, a);
          caches.created_empty_dir(p);  // lookups inside are answered here until something is added
          reply_entry(rq, parent, n, a);
        });
  }

  void symlink(fuse_req_t req, const char* target, Ino parent, const char* name) {
    if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    std::string p = *path, n = name, t = target;
    create_and_stat(
        req, parent, n, p,
        [this, p, t](size_t connection, client::Done done) { client->symlink_on(connection, t, p, std::move(done)); },
        [this, parent, n, p](fuse_req_t rq, const sftp::Attrs& a) {
          caches.added(p, a);
          reply_entry(rq, parent, n, a);
        });
  }

  void unlink(fuse_req_t req, Ino parent, const char* name) {
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    std::string p = *path, n = name;
    // Open handles keep working after REMOVE (the server has POSIX semantics), so nothing is hidden:
    // the node is only detached and serves its handles until they close.
    auto change = std::make_shared<NamespaceChange>(this);  // until the reply has been handled
    client->remove(p, tracked([this, req, parent, n, p, change](Status s) {
      if (!s) {
        caches.changed_unknown(p);
        return reply_error(req, s.error());
      }
      caches.removed(p);
      inodes.unlink(parent, n);
      fuse_reply_err(req, 0);
    }));
  }

  void rmdir(fuse_req_t req, Ino parent, const char* name) {
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    std::string p = *path, n = name;
    client->rmdir(p, tracked([this, req, parent, n, p](Status s) {
      if (s) {
        caches.removed(p);
        inodes.unlink(parent, n);
        return (void)fuse_reply_err(req, 0);
      }
      caches.changed_tree(p);
      Error error = s.take_error();
      if (!is_status(error, sftp::SSH_FX_FAILURE)) return reply_error(req, error);
      // Servers say FAILURE for ENOTEMPTY: look.
      dir_has_entries(p, [this, req, error](Result<bool> has) {
        if (has && *has) return (void)fuse_reply_err(req, ENOTEMPTY);
        reply_error(req, error);
      });
    }));
  }

  void rename(fuse_req_t req, Ino parent, const char* name, Ino newparent, const char* newname, unsigned flags) {
    if (flags & RENAME_EXCHANGE) return (void)fuse_reply_err(req, EINVAL);  // SFTP cannot swap atomically
    if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return (void)fuse_reply_err(req, EINVAL);
    if (name_too_long(newname)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto from = inodes.child_path(parent, name);
    auto to = inodes.child_path(newparent, newname);
    if (!from || !to) return (void)fuse_reply_err(req, ENOENT);
    std::string f = *from, t = *to, n = name, nn = newname;

    auto change = std::make_shared<NamespaceChange>(this);  // until the reply has been handled
    auto done = [this, req, parent, n, newparent, nn, f, t, change](Status s) {
      if (s) {
        // The name moved: both listings stay current (the moved entry keeps its attributes).
        std::optional<sftp::Attrs> moved;
        if (auto cached = caches.attrs.get(f)) moved = cached->attrs;
        caches.subtrees_moved();
        caches.removed(f);
        caches.removed(t);
        caches.added(t, moved);
        inodes.rename(parent, n, newparent, nn);
        return (void)fuse_reply_err(req, 0);
      }
      caches.changed_tree(f);
      caches.changed_tree(t);
      Error error = s.take_error();
      if (!is_status(error, sftp::SSH_FX_FAILURE)) return reply_error(req, error);
      // FAILURE: onto a non-empty directory is ENOTEMPTY; see what the target is.
      client->lstat(t, tracked([this, req, t, error](Result<sftp::Attrs> a) {
        if (!a || !S_ISDIR(a->permissions)) return reply_error(req, error);
        dir_has_entries(t, [this, req, error](Result<bool> has) {
          if (has && *has) return (void)fuse_reply_err(req, ENOTEMPTY);
          reply_error(req, error);
        });
      }));
    };

    auto do_rename = [this, f, t, done] {
      if (client->features().has(sftp::kExtPosixRename)) return client->rename(f, t, tracked(done));
      // Plain RENAME refuses an existing target on most servers: remove a file target first. Not
      // atomic: between the two requests the target name is briefly absent.
      client->rename(f, t, tracked([this, f, t, done](Status s) {
        if (s || !is_status(s.error(), sftp::SSH_FX_FAILURE)) return done(std::move(s));
        client->lstat(t, tracked([this, f, t, done, s](Result<sftp::Attrs> a) {
          if (!a || S_ISDIR(a->permissions)) return done(s);
          client->remove(t, tracked([this, f, t, done](Status removed) {
            if (!removed) return done(std::move(removed));
            client->rename(f, t, tracked(done));
          }));
        }));
      }));
    };

    if (flags & RENAME_NOREPLACE) {
      // Check, then rename: another client could create the target between the two requests; SFTP
      // offers no atomic "rename unless exists" (plain RENAME is that on OpenSSH, but not everywhere).
      return client->lstat(t, tracked([this, req, t, do_rename](Result<sftp::Attrs> a) {
        if (a) return (void)fuse_reply_err(req, EEXIST);
        if (!is_status(a.error(), sftp::SSH_FX_NO_SUCH_FILE)) return reply_error(req, a.error());
        do_rename();
      }));
    }
    do_rename();
  }

  void link(fuse_req_t req, Ino ino, Ino newparent, const char* newname) {
    if (opt.disable_hardlink || !client->features().has(sftp::kExtHardlink)) return (void)fuse_reply_err(req, EPERM);
    if (name_too_long(newname)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto from = inodes.path(ino);
    auto to = inodes.child_path(newparent, newname);
    if (!from || !to) return (void)fuse_reply_err(req, ENOENT);
    std::string f = *from, t = *to, nn = newname;
    caches.negative.invalidate(t);
    caches.attrs.invalidate(t);
    // The hardlink and the LSTAT of the new name back to back on one connection: one round trip.
    size_t connection = client->pick_connection();
    auto [on_linked, on_stat] = joined<Status, Result<sftp::Attrs>>(
        [this, req, ino, newparent, nn, f, t](Status s, Result<sftp::Attrs> r) {
          if (!s) {
            Error error = s.take_error();
            caches.changed_unknown(t);
            // FAILURE is what servers say for EEXIST: the LSTAT says whether the name exists.
            if (is_status(error, sftp::SSH_FX_FAILURE) && r) return (void)fuse_reply_err(req, EEXIST);
            return reply_error(req, error);
          }
          caches.changed(f);
          // One more name for the same file: the count we knew, plus one. (LSTAT carries no link count.)
          uint32_t nlink = std::max<uint32_t>(inodes.nlink(ino), 1) + 1;
          inodes.set_nlink(ino, nlink);
          // Some servers answer OK and do nothing: the new name must exist.
          if (!r) {
            caches.changed_unknown(t);
            if (is_status(r.error(), sftp::SSH_FX_NO_SUCH_FILE)) return (void)fuse_reply_err(req, EPERM);
            return reply_error(req, r.error());
          }
          caches.added(t, *r, nlink);
          // The kernel keeps the source's cached attributes (a different node to it): have it ask again
          // for the new link count. Attributes only (offset < 0): no page cache work, nothing to deadlock.
          if (session) fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
          reply_entry(req, newparent, nn, *r, nlink);
        });
    client->hardlink_on(connection, f, t, tracked(on_linked));
    client->lstat_on(connection, t, tracked(on_stat));
  }

  // ---- files ----

  bool keep_cache_for(const std::string& path) {
    if (opt.kernel_cache) return true;
    (void)path;
    // auto_cache: keep pages while attributes say the file is unchanged; FUSE_CAP_AUTO_INVAL_DATA
    // makes the kernel drop them when a later getattr shows a new mtime or size.
    return opt.auto_cache;
  }

  void finish_open(fuse_req_t req, Ino ino, fuse_file_info* fi, client::FileRef remote, uint64_t size,
                   std::optional<sftp::Attrs> entry_attrs, Ino parent, const std::string& name) {
    bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
    bool append = (fi->flags & O_APPEND) != 0;
    auto handle = std::make_shared<FileHandle>(ino, remote, writable, append);
    handle->append_offset = size;
    std::string path = remote->path;
    const bool readable = (fi->flags & O_ACCMODE) != O_WRONLY;
    if (fi->flags & O_TRUNC) data_changed(ino);  // other handles' prefetched bytes are gone
    std::optional<sftp::Attrs> known = entry_attrs;
    if (!known && !(fi->flags & O_TRUNC)) {
      if (auto cached = caches.attrs.get(path)) known = cached->attrs;
    }
    if (known && known->has(sftp::SSH_FILEXFER_ATTR_SIZE)) {
      handle->size_hint.store(known->size);
    } else if (fi->flags & O_TRUNC) {
      handle->size_hint.store(0);
    }
    if (readable && opt.prefetch && prefetch_budget->limit() > 0) {
      PrefetchConfig config;
      config.max_window = std::max<uint64_t>(opt.prefetch_max_window, config.initial_window);
      std::weak_ptr<FileHandle> weak = handle;
      handle->prefetcher = Prefetcher::create(config, prefetch_budget,
                                              [this, weak](uint64_t off, uint32_t length, Prefetcher::FetchDone done) {
                                                auto h = weak.lock();
                                                if (!h) return done(Error::errno_error(EBADF, "file closed"));
                                                read_segment(h, off, length, std::move(done));
                                              });
    }
    inodes.open_ref(ino);
    fi->fh = register_handle(handle, ino);
    fi->direct_io = opt.direct_io ? 1 : 0;
    fi->keep_cache = (!writable && keep_cache_for(path)) ? 1 : 0;
    if (writable || (fi->flags & O_TRUNC)) caches.changed(path);
    int sent;
    fuse_entry_param e;
    if (entry_attrs) {
      int err = 0;
      auto linked = make_entry(parent, name, *entry_attrs, 0, e, &err);
      if (!linked) {
        release_handle(fi->fh);
        return (void)fuse_reply_err(req, err);
      }
      sent = fuse_reply_create(req, &e, fi);
      if (sent != 0) inodes.forget(*linked, 1);
    } else {
      sent = fuse_reply_open(req, fi);
    }
    if (sent != 0) release_handle(fi->fh);  // the application never got the file: close it
  }

  void open(fuse_req_t req, Ino ino, fuse_file_info* fi) {
    auto path = inodes.path(ino);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    uint32_t pflags = open_pflags(fi->flags);
    fuse_file_info info = *fi;
    // O_TRUNC must not be overtaken by writes to the file still in flight (possibly on other
    // connections): they would land after the truncation. O_APPEND reads the size at open: after
    // them too.
    if (info.flags & (O_TRUNC | O_APPEND)) {
      return when_inode_drained(ino, [this, req, ino, info, p = *path, pflags] { open_now(req, ino, info, p, pflags); });
    }
    open_now(req, ino, info, *path, pflags);
  }

  void open_now(fuse_req_t req, Ino ino, fuse_file_info info, const std::string& path, uint32_t pflags) {
    client->open(path, pflags, sftp::Attrs{}, tracked([this, req, ino, info](Result<client::FileRef> r) mutable {
      if (!r) return reply_error(req, r.error());
      client::FileRef remote = *r;
      if (!(info.flags & O_APPEND) || (info.flags & O_TRUNC)) {
        return finish_open(req, ino, &info, remote, 0, std::nullopt, 0, {});
      }
      // Appends go to our idea of the end of file, which starts at the size the file has now.
      client->fstat(remote, tracked([this, req, ino, info, remote](Result<sftp::Attrs> a) mutable {
        if (!a) {
          close_quietly(remote);
          return reply_error(req, a.error());
        }
        finish_open(req, ino, &info, remote, a->size, std::nullopt, 0, {});
      }));
    }));
  }

  void create(fuse_req_t req, Ino parent, const char* name, mode_t mode, fuse_file_info* fi) {
    if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
    auto path = inodes.child_path(parent, name);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    uint32_t pflags = open_pflags(fi->flags) | sftp::SSH_FXF_CREAT;
    if (fi->flags & O_EXCL) pflags |= sftp::SSH_FXF_EXCL;
    sftp::Attrs attrs;
    attrs.set_permissions(mode & 07777);
    std::string p = *path, n = name;
    fuse_file_info info = *fi;
    caches.negative.invalidate(p);
    caches.attrs.invalidate(p);
    // OPEN and the LSTAT that gives the entry's attributes (owner, mode after the server's umask, size
    // when the file existed) go back to back on one connection: one round trip.
    size_t connection = client->pick_connection();
    auto [on_open, on_stat] = joined<Result<client::FileRef>, Result<sftp::Attrs>>(
        [this, req, parent, n, p, info](Result<client::FileRef> r, Result<sftp::Attrs> a) mutable {
          if (!r) {
            Error error = r.take_error();
            caches.changed_unknown(p);
            // FAILURE is what servers say for EEXIST: the LSTAT says whether the name exists.
            if (is_status(error, sftp::SSH_FX_FAILURE) && a) return (void)fuse_reply_err(req, EEXIST);
            return reply_error(req, error);
          }
          client::FileRef remote = *r;
          auto created = [this, req, parent, n, p, info, remote](const sftp::Attrs& attrs) mutable {
            caches.added(p, attrs);
            auto ino = inodes.link(parent, n, 0, S_IFREG);
            if (!ino) {
              close_quietly(remote);
              return (void)fuse_reply_err(req, ENOENT);
            }
            finish_open(req, *ino, &info, remote, attrs.size, attrs, parent, n);
          };
          if (a && a->has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) && S_ISREG(a->permissions)) return created(*a);
          // Opened through a symlink, or the name changed meanwhile: ask the open file itself.
          client->fstat(remote, tracked([this, req, remote, created](Result<sftp::Attrs> fa) mutable {
            if (!fa) {
              close_quietly(remote);
              return reply_error(req, fa.error());
            }
            created(*fa);
          }));
        });
    client->open_on(connection, p, pflags, attrs, tracked(on_open));
    client->lstat_on(connection, p, tracked(on_stat));
  }

  void release_handle(uint64_t fh) {
    auto base = unregister_handle(fh);
    if (!base || base->is_dir) return;
    auto handle = std::static_pointer_cast<FileHandle>(base);
    if (handle->prefetcher) handle->prefetcher->invalidate();  // nobody reads them any more
    when_drained(handle, [this, handle] {
      // Nothing can report a CLOSE failure to the application any more: do not wait for it.
      close_quietly(handle->remote);
      std::vector<client::FileRef> stripes;
      {
        std::lock_guard lock(handle->mutex);
        handle->released = true;
        stripes.swap(handle->stripes);
        stripes.insert(stripes.end(), handle->write_stripes.begin(), handle->write_stripes.end());
        handle->write_stripes.clear();
      }
      for (auto& s : stripes) close_quietly(s);
      if (handle->writable) {
        if (auto path = inodes.path(handle->ino)) caches.changed(*path);
      }
      inodes.close_ref(handle->ino);
    });
  }

  void read(fuse_req_t req, Ino, size_t size, off_t off, fuse_file_info* fi) {
    auto handle = file_handle(fi);
    if (!handle) return (void)fuse_reply_err(req, EBADF);
    if (off < 0) return (void)fuse_reply_err(req, EINVAL);
    uint32_t length = static_cast<uint32_t>(std::min<size_t>(size, UINT32_MAX));
    uint64_t offset = static_cast<uint64_t>(off);
    if (handle->prefetcher) {
      bool taken = handle->prefetcher->read(
          offset, length, [this, req, handle, offset, length](std::optional<Prefetcher::Slices> slices) {
            if (!slices) return direct_read(req, handle, offset, length);
            fuse_reply_iov(req, slices->iov.data(), static_cast<int>(slices->iov.size()));
          });
      if (taken) return;
    }
    direct_read(req, handle, offset, length);
  }

  // A long write stream also opens the file for writing on the other connections (see
  // kWriteStripeAfter). The extra handle must name the same file as the first: it is opened by the
  // node's current path, and kept only if no rename or removal through this mount could have run in
  // between (a rename by another client meanwhile is beyond what SFTP lets us see). A failed OPEN
  // (permissions: a file created read-only) just leaves the stream on the first connection.
  void maybe_open_write_stripes(const std::shared_ptr<FileHandle>& h) {
    const size_t connections = client->connection_count();
    if (connections < 2 || h->append) return;
    {
      std::lock_guard lock(h->mutex);
      if (h->write_stripes_requested || h->released || h->bytes_written < kWriteStripeAfter) return;
      h->write_stripes_requested = true;
    }
    const uint64_t epoch = namespace_changes.load();
    auto path = inodes.path(h->ino);
    if (!path || namespace_changes_running.load() != 0) {
      std::lock_guard lock(h->mutex);
      h->write_stripes_requested = !path;  // detached: never; a rename running: try again later
      return;
    }
    for (size_t i = 1; i < connections; ++i) {
      size_t index = (h->remote->connection + i) % connections;
      // WRITE only: no CREAT/TRUNC/EXCL/APPEND, the file exists and must not change by opening it.
      client->open_on(index, *path, sftp::SSH_FXF_WRITE, sftp::Attrs{},
                      tracked([this, h, epoch, expected = *path](Result<client::FileRef> r) {
                        if (!r) {
                          LOG_DEBUG("extra write handle for %s not opened: %s", expected.c_str(),
                                    r.error().message.c_str());
                          return;
                        }
                        bool same_file = namespace_changes_running.load() == 0 &&
                                         namespace_changes.load() == epoch && inodes.path(h->ino) == expected;
                        bool keep = false;
                        if (same_file) {
                          std::lock_guard lock(h->mutex);
                          if (!h->released) {
                            h->write_stripes.push_back(*r);
                            keep = true;
                          }
                        }
                        if (!keep) close_quietly(*r);
                      }));
    }
  }

  // The handle's remote file on `connection` (the first handle, or an extra one opened there).
  client::FileRef write_target(const std::shared_ptr<FileHandle>& h, size_t connection) {
    std::lock_guard lock(h->mutex);
    for (auto& s : h->write_stripes)
      if (s->connection == connection) return s;
    return h->remote;
  }

  void write(fuse_req_t req, Ino, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
    auto handle = file_handle(fi);
    if (!handle) return (void)fuse_reply_err(req, EBADF);
    if (off < 0) return (void)fuse_reply_err(req, EINVAL);
    uint64_t offset = static_cast<uint64_t>(off);
    bool ack_now = false;
    std::optional<Error> earlier;
    {
      std::lock_guard lock(handle->mutex);
      // An earlier write failed: say so here, and again at flush/close (the file is already damaged).
      if (handle->first_error) earlier = handle->first_error;
    }
    if (earlier) return reply_error(req, *earlier);
    std::vector<size_t> usable{handle->remote->connection};
    {
      std::lock_guard lock(handle->mutex);
      if (handle->append) {
        offset = handle->append_offset;
        handle->append_offset += size;
      }
      handle->bytes_written += size;
      for (auto& s : handle->write_stripes) usable.push_back(s->connection);
      handle->in_flight += size;
      ack_now = handle->in_flight <= kWriteBehindBytes * usable.size();
    }
    maybe_open_write_stripes(handle);
    // Round robin by position: a sequential stream spreads evenly, a rewrite of the same place
    // prefers the same connection.
    size_t preferred = usable[static_cast<size_t>(offset / kWriteStripeGranule) % usable.size()];
    floor_write_sent(handle->ino, offset + size, size);
    data_changed(handle->ino);
    sftp::Bytes data(reinterpret_cast<const uint8_t*>(buf), reinterpret_cast<const uint8_t*>(buf) + size);
    auto answered = [this, req, handle, size, ack_now](WriteOrder::Token token, Status s) {
      write_order.complete(handle->ino, token);
      std::vector<std::function<void()>> waiters;
      std::optional<Error> mine;
      {
        std::lock_guard lock(handle->mutex);
        handle->in_flight -= size;
        if (!s) {
          mine = s.error();
          if (!handle->first_error) handle->first_error = s.error();
        }
        if (handle->in_flight == 0) waiters.swap(handle->drained_waiters);
      }
      floor_write_done(handle->ino, size);
      if (!ack_now) {
        if (mine) {
          reply_error(req, *mine);
        } else {
          fuse_reply_write(req, size);
        }
      }
      for (auto& w : waiters) w();
    };
    // Counted as outstanding from now, even while it waits in WriteOrder.
    auto on_reply = tracked([answered](std::pair<WriteOrder::Token, Status> r) { answered(r.first, std::move(r.second)); });
    write_order.write(handle->ino, offset, offset + size, std::move(usable), preferred,
                      [this, handle, offset, data = std::move(data), on_reply](size_t connection,
                                                                              WriteOrder::Token token) mutable {
                        client->write(write_target(handle, connection), offset, std::move(data),
                                      [on_reply, token](Status s) mutable { on_reply(std::make_pair(token, std::move(s))); });
                      });
    if (ack_now) fuse_reply_write(req, size);
  }

  void flush(fuse_req_t req, Ino, fuse_file_info* fi) {
    auto handle = file_handle(fi);
    if (!handle) return (void)fuse_reply_err(req, 0);
    if (!handle->writable) return (void)fuse_reply_err(req, 0);
    when_drained(handle, [this, req, handle] {
      if (auto e = take_write_error(handle)) return reply_error(req, *e);
      fuse_reply_err(req, 0);
    });
  }

  void release(fuse_req_t req, Ino, fuse_file_info* fi) {
    release_handle(fi->fh);
    fuse_reply_err(req, 0);
  }

  void fsync(fuse_req_t req, Ino, int, fuse_file_info* fi) {
    auto handle = file_handle(fi);
    if (!handle) return (void)fuse_reply_err(req, EBADF);
    // Every write to the file on every connection (this handle's, striped or not, and other
    // handles'), then one fsync@openssh.com: the server's fsync(2) flushes the whole file, whichever
    // of its descriptors it is called on.
    when_inode_drained(handle->ino, [this, req, handle] {
      if (auto e = take_write_error(handle)) return reply_error(req, *e);
      if (!client->features().has(sftp::kExtFsync)) return (void)fuse_reply_err(req, 0);
      client->fsync(handle->remote, tracked([this, req](Status s) {
        if (!s && s.error().kind != Error::Kind::unsupported) return reply_error(req, s.error());
        fuse_reply_err(req, 0);
      }));
    });
  }

  void copy_file_range(fuse_req_t req, fuse_file_info* fi_in, off_t off_in, fuse_file_info* fi_out, off_t off_out,
                       size_t len, int flags) {
    // ENOSYS: the kernel stops asking and copies through read/write itself.
    if (!client->features().has(sftp::kExtCopyData)) return (void)fuse_reply_err(req, ENOSYS);
    if (flags != 0) return (void)fuse_reply_err(req, EINVAL);
    auto in = file_handle(fi_in);
    auto out = file_handle(fi_out);
    if (!in || !out) return (void)fuse_reply_err(req, EBADF);
    if (off_in < 0 || off_out < 0) return (void)fuse_reply_err(req, EINVAL);
    if (len == 0) return (void)fuse_reply_write(req, 0);
    // Both files' writes (on every connection, through every handle) must be on the server before it copies.
    when_inode_drained(in->ino, [this, req, in, out, off_in, off_out, len] {
      when_inode_drained(out->ino, [this, req, in, out, off_in, off_out, len] {
        // copy-data copies up to EOF without saying how much: clamp to the source's size first.
        client->fstat(in->remote, tracked([this, req, in, out, off_in, off_out, len](Result<sftp::Attrs> a) {
          if (!a) return reply_error(req, a.error());
          uint64_t size = a->size, from = static_cast<uint64_t>(off_in);
          uint64_t n = from >= size ? 0 : std::min<uint64_t>(len, size - from);
          if (n == 0) return (void)fuse_reply_write(req, 0);
          uint64_t to = static_cast<uint64_t>(off_out);
          floor_write_sent(out->ino, to + n, n);
          data_changed(out->ino);
          // A write to the destination range made meanwhile must not overtake the copy.
          const size_t connection = out->remote->connection;
          auto on_copied = tracked([this, req, out, n](std::pair<WriteOrder::Token, Status> r) {
            write_order.complete(out->ino, r.first);
            Status s = std::move(r.second);
            floor_write_done(out->ino, n);
            if (auto path = inodes.path(out->ino)) caches.changed(*path);
            if (!s) {
              if (s.error().kind == Error::Kind::unsupported) return (void)fuse_reply_err(req, ENOSYS);
              return reply_error(req, s.error());
            }
            fuse_reply_write(req, n);
          });
          write_order.write(out->ino, to, to + n, {connection}, connection,
                            [this, in, out, from, n, to, on_copied](size_t, WriteOrder::Token token) mutable {
                              client->copy_data(in->remote, from, n, out->remote, to,
                                                [on_copied, token](Status st) mutable {
                                                  on_copied(std::make_pair(token, std::move(st)));
                                                });
                            });
        }));
      });
    });
  }

  // ---- directories ----

  void opendir(fuse_req_t req, Ino ino, fuse_file_info* fi) {
    auto path = inodes.path(ino);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    auto dir = std::make_shared<DirHandle>(ino, *path);
    dir->in_flight_limit = kReaddirInitialInFlight;
    if (auto listing = caches.listing_for_readdir(*path)) {
      dir->listing = *listing;
      dir->complete = true;
      fi->fh = register_handle(dir, ino);
      if (fuse_reply_open(req, fi) != 0) unregister_handle(fi->fh);
      read_subdirectories_ahead(*path, *listing);
      return;
    }
    dir->stamp = caches.listing_stamp();
    // A listing being read ahead for this directory: wait for it rather than read it twice.
    if (auto ahead = listing_being_read(*path)) {
      std::shared_ptr<DirHandle> pending = ahead;
      fi->fh = register_handle(pending_view(pending, ino), ino);
      if (fuse_reply_open(req, fi) != 0) unregister_handle(fi->fh);
      return;
    }
    fuse_file_info info = *fi;
    client->opendir(*path, tracked([this, req, dir, info](Result<client::FileRef> r) mutable {
      if (!r) return reply_error(req, r.error());
      {
        std::lock_guard lock(dir->mutex);
        dir->remote = *r;
      }
      info.fh = register_handle(dir, dir->ino);
      // Start reading at once: the first readdir usually follows immediately.
      fetch_more(dir);
      if (fuse_reply_open(req, &info) != 0) release_dir(info.fh);
    }));
  }

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

  std::shared_ptr<DirHandle> listing_being_read(const std::string& path) {
    std::lock_guard lock(ahead_mutex);
    auto it = listings_ahead.find(path);
    return it == listings_ahead.end() ? nullptr : it->second;
  }

  // A kernel directory handle served by a listing that is being read ahead: it completes with it.
  std::shared_ptr<DirHandle> pending_view(const std::shared_ptr<DirHandle>& ahead, Ino ino) {
    auto view = std::make_shared<DirHandle>(ino, ahead->path);
    bool done = false;
    {
      std::lock_guard lock(ahead->mutex);
      if (ahead->complete) {
        done = true;
      } else {
        ahead->on_complete.push_back([this, ahead, view] { copy_completion(*ahead, *view); });
      }
    }
    if (done) copy_completion(*ahead, *view);
    return view;
  }

  void copy_completion(DirHandle& from, DirHandle& to) {
    DirListing listing;
    std::optional<Error> error;
    {
      std::lock_guard lock(from.mutex);
      listing = from.listing;
      error = from.error;
    }
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard lock(to.mutex);
      to.listing = listing ? listing : std::make_shared<const std::vector<DirEntry>>();
      to.error = error;
      to.complete = true;
      waiters.swap(to.on_complete);
    }
    for (auto& w : waiters) w();
    if (!error) read_subdirectories_ahead(to.path, listing);  // the application walks on
  }

  void read_listing_ahead(const std::string& path) {
    if (!opt.cache || !caches.dirs.enabled() || opt.follow_symlinks) return;
    if (caches.dirs.get(path)) return;
    auto dir = std::make_shared<DirHandle>(0, path);
    dir->in_flight_limit = kReaddirInitialInFlight;
    dir->stamp = caches.listing_stamp();
    {
      std::lock_guard lock(ahead_mutex);
      if (listings_ahead.size() >= kMaxListingsAhead || listings_ahead.count(path)) return;
      listings_ahead.emplace(path, dir);
      dir->on_complete.push_back([this, path] {
        std::lock_guard l(ahead_mutex);
        listings_ahead.erase(path);
      });
    }
    client->opendir(path, tracked([this, dir](Result<client::FileRef> r) {
      if (!r) {
        {
          std::lock_guard lock(dir->mutex);
          dir->error = r.error();
        }
        return finish_listing(dir);
      }
      {
        std::lock_guard lock(dir->mutex);
        dir->remote = *r;
      }
      fetch_more(dir);
    }));
  }

  void read_subdirectories_ahead(const std::string& path, const DirListing& listing) {
    if (!listing || !opt.cache) return;
    size_t started = 0;
    for (const auto& e : *listing) {
      if (started >= kMaxSubdirsAhead) break;
      if (!e.attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) || !S_ISDIR(e.attrs.permissions)) continue;
      read_listing_ahead(InodeTable::join(path, e.name));
      ++started;
    }
  }

  // A directory's size (when its attributes are known) says roughly how many entries it has: on
  // Linux file systems about 20-40 bytes each, and OpenSSH answers up to 100 entries per READDIR, so
  // size / 2048 requests in flight read it in about one round trip. Small or unknown: the default.
  int initial_readdir_window(const std::string& path) {
    auto cached = caches.attrs.get(path);
    if (!cached || !cached->attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE)) return kReaddirInitialInFlight;
    uint64_t guess = cached->attrs.size / 2048;
    return static_cast<int>(std::clamp<uint64_t>(guess, kReaddirInitialInFlight, kReaddirMaxInFlight));
  }

  void fetch_more(const std::shared_ptr<DirHandle>& dir) {
    for (;;) {
      uint64_t seq;
      client::FileRef remote;
      {
        std::lock_guard lock(dir->mutex);
        if (dir->issued == 0) dir->in_flight_limit = initial_readdir_window(dir->path);
        if (dir->eof || dir->error || !dir->remote || dir->outstanding >= dir->in_flight_limit) return;
        seq = dir->issued++;
        ++dir->outstanding;
        remote = dir->remote;
      }
      client->readdir(remote, tracked([this, dir, seq](Result<std::vector<sftp::NameEntry>> r) {
        bool done = false;
        {
          std::lock_guard lock(dir->mutex);
          --dir->outstanding;
          if (!r) {
            if (!dir->eof && !dir->error) dir->error = r.error();
          } else if (r->empty()) {
            dir->eof = true;
          } else {
            dir->batches.emplace(seq, std::move(*r));
            dir->in_flight_limit = std::min(kReaddirMaxInFlight, dir->in_flight_limit + kReaddirGrowth);
          }
          done = (dir->eof || dir->error) && dir->outstanding == 0;
        }
        if (done) return finish_listing(dir);
        fetch_more(dir);
      }));
    }
  }

  void finish_listing(const std::shared_ptr<DirHandle>& dir) {
    std::map<uint64_t, std::vector<sftp::NameEntry>> batches;
    client::FileRef remote;
    std::optional<Error> error;
    {
      std::lock_guard lock(dir->mutex);
      batches.swap(dir->batches);
      remote = std::move(dir->remote);
      dir->remote.reset();
      error = dir->error;
    }
    close_quietly(remote);
    auto entries = std::make_shared<std::vector<DirEntry>>();
    if (!error) {
      for (auto& [seq, names] : batches) {
        for (auto& n : names) {
          if (n.filename == "." || n.filename == "..") continue;
          // Never trust names from the server: one with a '/' (or none at all) is not an entry here.
          if (n.filename.empty() || n.filename.find('/') != std::string::npos ||
              n.filename.find('\0') != std::string::npos) {
            LOG_WARN("ignoring invalid name in listing of %s", dir->path.c_str());
            continue;
          }
          entries->push_back(DirEntry{std::move(n.filename), n.attrs, longname_link_count(n.longname).value_or(0)});
        }
      }
      caches.put_listing_since(dir->path, entries, dir->stamp, dir->ino == 0);
    }
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard lock(dir->mutex);
      dir->listing = entries;
      dir->complete = true;
      waiters.swap(dir->on_complete);
    }
    for (auto& w : waiters) w();
    // The application reads this directory: it will likely read its subdirectories next.
    if (!error && dir->ino != 0) read_subdirectories_ahead(dir->path, entries);
  }

  void readdir(fuse_req_t req, Ino, size_t size, off_t off, fuse_file_info* fi, bool plus) {
    auto dir = dir_handle(fi);
    if (!dir) return (void)fuse_reply_err(req, EBADF);
    auto serve = [this, req, dir, size, off, plus] { serve_readdir(req, dir, size, off, plus); };
    {
      std::lock_guard lock(dir->mutex);
      if (!dir->complete) {
        dir->on_complete.push_back(serve);
        return;
      }
    }
    serve();
  }

  void serve_readdir(fuse_req_t req, const std::shared_ptr<DirHandle>& dir, size_t size, off_t off, bool plus) {
    DirListing listing;
    std::optional<Error> error;
    {
      std::lock_guard lock(dir->mutex);
      listing = dir->listing;
      error = dir->error;
    }
    if (error) return reply_error(req, *error);
    std::vector<char> buf(size);
    size_t used = 0;
    size_t total = 2 + listing->size();
    for (size_t index = off < 0 ? 0 : static_cast<size_t>(off); index < total; ++index) {
      char* p = buf.data() + used;
      size_t room = size - used;
      off_t next = static_cast<off_t>(index + 1);
      if (index < 2) {
        const char* name = index == 0 ? "." : "..";
        Ino ino = index == 0 ? dir->ino : inodes.parent_of(dir->ino).value_or(dir->ino);
        struct stat st {};
        st.st_ino = ino;
        st.st_mode = S_IFDIR;
        size_t n;
        if (plus) {
          fuse_entry_param e;
          std::memset(&e, 0, sizeof e);  // ino 0: the kernel takes no reference for . and ..
          e.attr = st;
          n = fuse_add_direntry_plus(req, p, room, name, &e, next);
        } else {
          n = fuse_add_direntry(req, p, room, name, &st, next);
        }
        if (n > room) break;
        used += n;
        continue;
      }
      const DirEntry& entry = (*listing)[index - 2];
      const char* name = entry.name.c_str();
      mode_t type = entry.attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) ? (entry.attrs.permissions & S_IFMT) : 0;
      if (!plus) {
        struct stat st {};
        st.st_ino = inodes.find(dir->ino, entry.name).value_or(kUnknownIno);
        st.st_mode = type;
        size_t n = fuse_add_direntry(req, p, room, name, &st, next);
        if (n > room) break;
        used += n;
        continue;
      }
      size_t needed = fuse_add_direntry_plus(req, nullptr, 0, name, nullptr, 0);
      if (needed > room) break;
      fuse_entry_param e;
      std::memset(&e, 0, sizeof e);
      // With follow_symlinks a link shows its target's attributes, which READDIR does not carry:
      // leave such entries (and entries without a type) to a lookup.
      bool usable = type != 0 && !(opt.follow_symlinks && S_ISLNK(type));
      if (usable) {
        int err = 0;
        if (!make_entry(dir->ino, entry.name, entry.attrs, entry.nlink, e, &err)) {
          std::memset(&e, 0, sizeof e);
          usable = false;
        }
      }
      if (!usable) {
        e.attr.st_ino = inodes.find(dir->ino, entry.name).value_or(kUnknownIno);
        e.attr.st_mode = type;
      }
      used += fuse_add_direntry_plus(req, p, room, name, &e, next);
    }
    fuse_reply_buf(req, buf.data(), used);
  }

  void release_dir(uint64_t fh) {
    auto base = unregister_handle(fh);
    if (!base || !base->is_dir) return;
    auto dir = std::static_pointer_cast<DirHandle>(base);
    client::FileRef remote;
    {
      std::lock_guard lock(dir->mutex);
      // Still fetching: the fetch closes the handle when it ends.
      if (dir->complete) remote = std::move(dir->remote);
    }
    close_quietly(remote);
  }

  void releasedir(fuse_req_t req, Ino, fuse_file_info* fi) {
    release_dir(fi->fh);
    fuse_reply_err(req, 0);
  }

  void statfs(fuse_req_t req, Ino) {
    auto defaults = [req] {
      // The server will not say: report plenty of room so tools that check free space proceed.
      struct statvfs st {};
      st.f_bsize = 4096;
      st.f_frsize = 4096;
      st.f_blocks = st.f_bfree = st.f_bavail = (1ull << 40) / 4096;
      st.f_files = st.f_ffree = st.f_favail = 1000000000;
      st.f_namemax = kNameMax;
      fuse_reply_statfs(req, &st);
    };
    if (!client->features().has(sftp::kExtStatvfs)) return defaults();
    client->statvfs(opt.remote_root, tracked([this, req, defaults](Result<sftp::Statvfs> r) {
      if (!r) {
        if (r.error().kind == Error::Kind::unsupported || is_status(r.error(), sftp::SSH_FX_OP_UNSUPPORTED)) {
          return defaults();
        }
        return reply_error(req, r.error());
      }
      struct statvfs st {};
      st.f_bsize = r->bsize;
      st.f_frsize = r->frsize != 0 ? r->frsize : r->bsize;
      st.f_blocks = r->blocks;
      st.f_bfree = r->bfree;
      st.f_bavail = r->bavail;
      st.f_files = r->files;
      st.f_ffree = r->ffree;
      st.f_favail = r->favail;
      st.f_fsid = r->fsid;
      st.f_namemax = r->namemax != 0 ? std::min<uint64_t>(r->namemax, kNameMax) : kNameMax;
      fuse_reply_statfs(req, &st);
    }));
  }
};

// ================= C callbacks: no exception crosses them =================

namespace {

Filesystem::Impl* impl_of(fuse_req_t req) { return static_cast<Filesystem::Impl*>(fuse_req_userdata(req)); }

template <class F>
void guarded(fuse_req_t req, F&& f) {
  try {
    f(impl_of(req));
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    LOG_ERROR("internal error: %s", e.what());
    fuse_reply_err(req, EIO);
  }
}

void op_init(void* userdata, fuse_conn_info* conn) { static_cast<Filesystem::Impl*>(userdata)->init(conn); }
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->lookup(req, parent, name); });
}
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  try {
    impl_of(req)->forget(ino, nlookup);
  } catch (...) {
  }
  fuse_reply_none(req);
}
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  try {
    for (size_t i = 0; i < count; ++i) impl_of(req)->forget(forgets[i].ino, forgets[i].nlookup);
  } catch (...) {
  }
  fuse_reply_none(req);
}
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->getattr(req, ino, fi); });
}
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->setattr(req, ino, attr, to_set, fi); });
}
void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, [&](auto* fs) { fs->readlink(req, ino); });
}
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req, [&](auto* fs) { fs->mknod(req, parent, name, mode, rdev); });
}
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, [&](auto* fs) { fs->mkdir(req, parent, name, mode); });
}
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->unlink(req, parent, name); });
}
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->rmdir(req, parent, name); });
}
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  guarded(req, [&](auto* fs) { fs->symlink(req, link, parent, name); });
}
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  guarded(req, [&](auto* fs) { fs->rename(req, parent, name, newparent, newname, flags); });
}
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  guarded(req, [&](auto* fs) { fs->link(req, ino, newparent, newname); });
}
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->open(req, ino, fi); });
}
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->read(req, ino, size, off, fi); });
}
void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->write(req, ino, buf, size, off, fi); });
}
void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->flush(req, ino, fi); });
}
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->release(req, ino, fi); });
}
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->fsync(req, ino, datasync, fi); });
}
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->opendir(req, ino, fi); });
}
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->readdir(req, ino, size, off, fi, false); });
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->readdir(req, ino, size, off, fi, true); });
}
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->releasedir(req, ino, fi); });
}
void op_fsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  fuse_reply_err(req, 0);  // directory changes are made by the server as they happen
}
void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, [&](auto* fs) { fs->statfs(req, ino); });
}
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  guarded(req, [&](auto* fs) { fs->create(req, parent, name, mode, fi); });
}
void op_copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t,
                        off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
  guarded(req, [&](auto* fs) { fs->copy_file_range(req, fi_in, off_in, fi_out, off_out, len, flags); });
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.create = op_create;
  ops.copy_file_range = op_copy_file_range;
  return ops;
}

const fuse_lowlevel_ops kOps = make_ops();

}  // namespace

// ================= Filesystem =================

std::unique_ptr<Filesystem> Filesystem::create(std::shared_ptr<client::Client> client, FsOptions options) {
  return std::unique_ptr<Filesystem>(new Filesystem(std::make_unique<Impl>(std::move(client), std::move(options))));
}

Filesystem::Filesystem(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Filesystem::~Filesystem() {
  if (!impl_) return;
  auto& fs = *impl_;
  if (fs.session) {
    if (fs.signals_set) fuse_remove_signal_handlers(fs.session);
    if (fs.mounted) fuse_session_unmount(fs.session);
    fs.mounted = false;
  }
  // Callbacks still in flight reference the Impl (and may reply through the session).
  fs.wait_for_calls();
  if (fs.session) fuse_session_destroy(fs.session);
  fs.session = nullptr;
}

namespace {

Status check_mountpoint(const std::string& mountpoint) {
  struct stat st {};
  if (::stat(mountpoint.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOTCONN) {
      return Error::errno_error(err, "mount point " + mountpoint +
                                         " is a disconnected FUSE mount: run 'fusermount3 -u " + mountpoint + "' first");
    }
    if (err == ENOENT) return Error::errno_error(err, "mount point " + mountpoint + " does not exist: create it first");
    return Error::errno_error(err, "mount point " + mountpoint + ": " + std::strerror(err));
  }
  if (!S_ISDIR(st.st_mode)) return Error::errno_error(ENOTDIR, "mount point " + mountpoint + " is not a directory");
  std::string parent = mountpoint + "/..";
  struct stat pst {};
  if (::stat(parent.c_str(), &pst) == 0 && pst.st_dev != st.st_dev && pst.st_ino != st.st_ino) {
    return Error::errno_error(EBUSY, "mount point " + mountpoint + " is already a mount point: unmount it first");
  }
  if (::access(mountpoint.c_str(), W_OK) != 0 && geteuid() != 0) {
    return Error::errno_error(EACCES, "mount point " + mountpoint + " is not writable by you");
  }
  return {};
}

}  // namespace

Status Filesystem::mount(const std::string& mountpoint) {
  auto& fs = *impl_;
  if (fs.session) return Error::errno_error(EBUSY, "already mounted");
  if (auto ok = check_mountpoint(mountpoint); !ok) return ok;

  std::string options = "subtype=" + escape_option(fs.opt.subtype.empty() ? "sftpfs" : fs.opt.subtype);
  if (!fs.opt.fsname.empty()) options += ",fsname=" + escape_option(fs.opt.fsname);
  if (fs.opt.allow_other) options += ",allow_other";
  if (fs.opt.allow_root) options += ",allow_root";
  if (fs.opt.default_permissions) options += ",default_permissions";
  if (fs.opt.max_read != 0) options += ",max_read=" + std::to_string(fs.opt.max_read);
  for (const auto& extra : fs.opt.extra_fuse_options) options += "," + extra;

  std::vector<std::string> argv_storage = {"sftpfs", "-o", options};
  if (fs.opt.debug) argv_storage.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_storage) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fs.session = fuse_session_new(&args, &kOps, sizeof kOps, &fs);
  fuse_opt_free_args(&args);
  if (!fs.session) return Error::errno_error(EINVAL, "cannot create the FUSE session (bad FUSE options: " + options + ")");
  if (fuse_session_mount(fs.session, mountpoint.c_str()) != 0) {
    fuse_session_destroy(fs.session);
    fs.session = nullptr;
    return Error::errno_error(EPERM, "cannot mount on " + mountpoint +
                                         " (is /dev/fuse usable and fusermount3 installed? allow_other needs "
                                         "user_allow_other in /etc/fuse.conf)");
  }
  fs.mounted = true;
  fs.mountpoint = mountpoint;
  LOG_INFO("mounted %s on %s", fs.opt.remote_root.c_str(), mountpoint.c_str());
  return {};
}

int Filesystem::serve() {
  auto& fs = *impl_;
  if (!fs.session) return 1;
  if (fuse_set_signal_handlers(fs.session) == 0) fs.signals_set = true;
  int rc;
  if (fs.opt.single_threaded) {
    rc = fuse_session_loop(fs.session);
  } else {
    fuse_loop_config config{};
    config.clone_fd = 0;
    config.max_idle_threads = 10;  // threads only dispatch; a few idle ones absorb bursts
    rc = fuse_session_loop_mt(fs.session, &config);
  }
  if (fs.signals_set) {
    fuse_remove_signal_handlers(fs.session);
    fs.signals_set = false;
  }
  fuse_session_unmount(fs.session);
  fs.mounted = false;
  fs.wait_for_calls();
  LOG_INFO("unmounted %s", fs.mountpoint.c_str());
  return rc == 0 ? 0 : 1;
}

}  // namespace sftpfs::fs
