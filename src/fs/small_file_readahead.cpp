// Whole small files read ahead during a directory walk: see small_file_readahead.hpp for the rule.
#include "fs/small_file_readahead.hpp"

#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

namespace {

using Clock = std::chrono::steady_clock;

bool small_regular_file(const sftp::Attrs& a, int64_t now_seconds) {
  if (!a.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) || !S_ISREG(a.permissions)) return false;
  if (!a.has(sftp::SSH_FILEXFER_ATTR_SIZE) || !a.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) return false;
  if (a.size > SmallFileReadAhead::kMaxFileSize) return false;
  // Written within the last seconds (or dated in the future): likely still being written, and a
  // same-size rewrite within its mtime's second could not be told from it afterwards.
  return static_cast<int64_t>(a.mtime) + SmallFileReadAhead::kRecentSeconds < now_seconds;
}

int64_t wall_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct SmallFileReadAhead::Entry {
  std::string path, dir;
  Ino ino = 0;
  uint64_t size = 0;   // what the listing said, and so what the application is shown
  uint32_t mtime = 0;
  Clock::time_point sent_at;  // the bytes are at least this new
  uint64_t reserved = 0;      // of the prefetch budget: size + 1 (Prefetcher::preload)
  // Guarded by SmallFileReadAhead::mutex_.
  bool done = false, ok = false;
  bool dropped = false;  // changed through the mount
  bool taken = false;    // an application open waits for it
  bool closed = false;   // handle and reservation given away (served) or given back (discarded)
  client::FileRef remote;
  std::shared_ptr<const sftp::Bytes> data;
  std::optional<sftp::Attrs> after;  // FSTAT sent behind the READ
  std::vector<std::function<void()>> waiters;
};

SmallFileReadAhead::SmallFileReadAhead(Filesystem::Impl& fs)
    : fs_(fs),
      // Off with cache=no (every open asks the server), without prefetching (no_readahead, a budget of
      // 0) and without an attribute cache (nothing may be older than what attributes allow).
      enabled_(fs.opt.cache && fs.opt.prefetch && fs.prefetch_budget->limit() > 0 && fs.opt.attr_timeout.count() > 0 &&
               fs.caches.dirs.enabled()),
      max_age_(std::min(kMaxAge, fs.opt.attr_timeout)) {}

void SmallFileReadAhead::directory_opened(const std::string& dir) {
  if (!enabled_) return;
  const auto now = Clock::now();
  std::lock_guard lock(mutex_);
  // A directory remembered holds its listing: forget the ones past the listing cache's timeout
  // before they add up (a walk opens thousands of directories).
  if (dirs_.size() >= kMaxDirectories / 4 && !dirs_.count(dir)) {
    for (auto it = dirs_.begin(); it != dirs_.end();)
      it = now - it->second.listed_at > fs_.opt.dir_timeout ? dirs_.erase(it) : std::next(it);
    if (dirs_.size() >= kMaxDirectories) dirs_.clear();
  }
  Directory& d = dirs_[dir];
  d.listed_at = now;
  d.listing.reset();  // a new walk through it: positions and counts start over
}

bool SmallFileReadAhead::open(fuse_req_t req, Ino ino, const fuse_file_info& fi, const std::string& path) {
  if (!enabled_) return false;
  EntryPtr e;
  bool in_flight = false;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(path);
    if (it != entries_.end() && !it->second->taken) {
      e = it->second;
      if (e->done) {
        entries_.erase(it);
      } else {
        e->taken = true;  // the fetch's completion hands it to us
        in_flight = true;
      }
    }
  }
  note_open(ino, path, e != nullptr);
  if (!e) return false;
  if (in_flight) {
    std::lock_guard lock(mutex_);
    if (!e->done) {
      e->waiters.push_back([self = shared_from_this(), req, ino, fi, e] { self->serve(req, ino, fi, e); });
      return true;
    }
  }
  serve(req, ino, fi, e);
  return true;
}

void SmallFileReadAhead::note_open(Ino ino, const std::string& path, bool served) {
  auto parent = fs_.inodes.parent_of(ino);
  if (!parent) return;
  top_up(Caches::parent_path(path), *parent, Caches::leaf_name(path), served);
}

void SmallFileReadAhead::listing_read(Ino dir_ino, const std::string& dir) {
  if (!enabled_) return;
  top_up(dir, dir_ino, std::nullopt, false);
}

bool SmallFileReadAhead::walk_goes_on(Clock::time_point now) const {
  const auto since_served =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() - last_served_.load();
  return since_served < kWalkGoesOn.count();
}

void SmallFileReadAhead::top_up(const std::string& dir, Ino parent, const std::optional<std::string>& opened,
                                bool served) {
  if (fs_.stopping) return;
  const auto now = Clock::now();
  if (!opened && !walk_goes_on(now)) return;
  {
    std::lock_guard lock(mutex_);
    auto it = dirs_.find(dir);
    if (it == dirs_.end() || now - it->second.listed_at > fs_.opt.dir_timeout) return;  // not listed by the application
  }
  auto cached = fs_.caches.dirs.get(dir);
  if (!cached || !*cached || (*cached)->empty()) return;
  const DirListing listing = *cached;
  const int64_t now_seconds = wall_seconds();
  std::vector<size_t> picked;
  {
    std::lock_guard lock(mutex_);
    auto it = dirs_.find(dir);
    if (it == dirs_.end()) return;
    Directory& d = it->second;
    if (d.listing != listing) {  // another listing: positions start over
      d.listing = listing;
      d.done.assign(listing->size(), false);
      d.opens = 0;
      d.last = 0;
    }
    const size_t n = listing->size();
    // Where the picking starts: after the file just opened, or (the whole listing just read during a
    // walk) at the listing's first file.
    size_t first = 0, count = n;
    if (opened) {
      // A walk in listing order finds the name right after the last one.
      size_t at = n;
      for (size_t k = 0; k < n; ++k) {
        size_t j = (d.last + k) % n;
        if ((*listing)[j].name == *opened) {
          at = j;
          break;
        }
      }
      if (at == n) return;
      d.last = at;
      if (!d.done[at] && !served && small_regular_file((*listing)[at].attrs, now_seconds)) ++d.opens;
      d.done[at] = true;
      const size_t needed = walk_goes_on(now) ? 1 : kOpensToStart;
      if (!served && d.opens < needed) return;
      first = at + 1;
      count = n - 1;
    }
    size_t active = 0;
    for (const auto& [p, entry] : entries_) active += (entry->dir == dir && !entry->taken) ? 1 : 0;
    const size_t room = std::min(kPerDirectory - std::min(active, kPerDirectory),
                                 kMaxHeld - std::min(entries_.size(), kMaxHeld));
    // In listing order, wrapping around: a walk in another order still finds the ones it has not
    // read yet.
    for (size_t k = 0; k < count && k < kMaxScan && picked.size() < room; ++k) {
      size_t j = (first + k) % n;
      if (d.done[j] || !small_regular_file((*listing)[j].attrs, now_seconds)) continue;
      d.done[j] = true;
      picked.push_back(j);
    }
  }
  std::vector<EntryPtr> to_fetch;
  std::vector<size_t> not_started;
  for (size_t j : picked) {
    const DirEntry& entry = (*listing)[j];
    auto node = fs_.inodes.find(parent, entry.name);
    // No node: the kernel never saw the name, so its open would not find this entry by node either.
    // Writes in flight: a READ could overtake them (they drop what is read ahead when answered).
    if (!node || fs_.writes_in_flight(*node)) continue;
    if (!fs_.prefetch_budget->try_reserve(entry.attrs.size + 1)) {
      not_started.push_back(j);
      continue;
    }
    auto e = std::make_shared<Entry>();
    e->path = InodeTable::join(dir, entry.name);
    e->dir = dir;
    e->ino = *node;
    e->size = entry.attrs.size;
    e->mtime = entry.attrs.mtime;
    e->reserved = entry.attrs.size + 1;
    e->sent_at = Clock::now();
    to_fetch.push_back(std::move(e));
  }
  {
    std::lock_guard lock(mutex_);
    auto it = dirs_.find(dir);
    if (it != dirs_.end() && it->second.listing == listing) {
      for (size_t j : not_started) it->second.done[j] = false;  // no budget now: maybe later
    }
    for (auto e = to_fetch.begin(); e != to_fetch.end();) {
      if (entries_.size() >= kMaxHeld || !entries_.emplace((*e)->path, *e).second) {
        fs_.prefetch_budget->release((*e)->reserved);
        e = to_fetch.erase(e);
      } else {
        ++e;
      }
    }
  }
  for (auto& e : to_fetch) {
    ++started_;
    fetch(e);
  }
  if (!to_fetch.empty()) schedule_sweep();
}

void SmallFileReadAhead::fetch(const EntryPtr& e) {
  auto self = shared_from_this();
  fs_.client->open(e->path, sftp::SSH_FXF_READ, sftp::Attrs{}, fs_.tracked([self, e](Result<client::FileRef> r) {
    if (!r) return self->fetched(e, false, nullptr, std::nullopt);
    client::FileRef remote = *r;
    {
      std::lock_guard lock(self->mutex_);
      e->remote = remote;
    }
    // The whole file, and its attributes after it, in one round trip (one connection answers in
    // order): the bytes are exactly the file of that size and mtime unless it changed within a second.
    auto [on_data, on_attrs] = joined<Result<sftp::Bytes>, Result<sftp::Attrs>>(
        [self, e](Result<sftp::Bytes> data, Result<sftp::Attrs> attrs) {
          if (!data || !attrs) return self->fetched(e, false, nullptr, std::nullopt);
          self->fetched(e, true, std::make_shared<const sftp::Bytes>(std::move(*data)), std::move(*attrs));
        });
    if (e->size > 0) {
      self->fs_.client->read(remote, 0, static_cast<uint32_t>(e->size), self->fs_.tracked(on_data));
    } else {
      on_data(sftp::Bytes{});
    }
    self->fs_.client->fstat(remote, self->fs_.tracked(on_attrs));
  }));
}

void SmallFileReadAhead::fetched(const EntryPtr& e, bool ok, std::shared_ptr<const sftp::Bytes> data,
                                 std::optional<sftp::Attrs> after) {
  std::vector<std::function<void()>> waiters;
  bool unused = false;
  {
    std::lock_guard lock(mutex_);
    e->done = true;
    e->ok = ok;
    e->data = std::move(data);
    e->after = std::move(after);
    waiters.swap(e->waiters);
    auto it = entries_.find(e->path);
    if (e->taken) {
      if (it != entries_.end() && it->second == e) entries_.erase(it);  // the waiting open has it
    } else if (!ok || e->dropped || fs_.stopping) {
      if (it != entries_.end() && it->second == e) entries_.erase(it);
      unused = true;
    }
  }
  if (unused) discard(e, ok ? "changed through the mount" : "failed");
  for (auto& w : waiters) w();
}

const char* SmallFileReadAhead::unusable(const Entry& e, Ino ino) {
  bool ok, dropped;
  client::FileRef remote;
  std::shared_ptr<const sftp::Bytes> data;
  std::optional<sftp::Attrs> after;
  {
    std::lock_guard lock(mutex_);
    ok = e.ok;
    dropped = e.dropped;
    remote = e.remote;
    data = e.data;
    after = e.after;
  }
  if (!ok || !remote || !data) return "its read failed";
  if (dropped) return "changed through the mount";
  if (e.ino != ino) return "the name is another file now";
  if (Clock::now() - e.sent_at > max_age_) return "older than the age limit";
  if (remote->lost() || remote->reopened()) return "cut by a reconnect";
  // Size and mtime: the listing's (what the application is shown), the STAT the client sent behind
  // the OPEN, the FSTAT behind the READ, and the bytes themselves must all agree.
  const auto seen = remote->seen();
  if (!after || !after->has(sftp::SSH_FILEXFER_ATTR_SIZE) || !after->has(sftp::SSH_FILEXFER_ATTR_ACMODTIME) ||
      after->size != e.size || after->mtime != e.mtime || data->size() != e.size ||
      (seen && (seen->size != e.size || seen->mtime != e.mtime)))
    return "changed on the server before it was read ahead";
  // The newest attributes the mount has (a lookup, a listing read again, a change through the mount
  // forgets them): another size or mtime, or none, and the file is read afresh.
  auto cached = fs_.caches.attrs.get(e.path);
  if (!cached || !cached->attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE) || !cached->attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME) ||
      cached->attrs.size != e.size || cached->attrs.mtime != e.mtime)
    return "the mount shows other attributes for it now";
  if (fs_.writes_in_flight(ino)) return "being written through the mount";
  return nullptr;
}

void SmallFileReadAhead::serve(fuse_req_t req, Ino ino, fuse_file_info fi, const EntryPtr& e) {
  if (const char* why = unusable(*e, ino)) {
    discard(e, why);
    auto path = fs_.inodes.path(ino);
    if (!path) return (void)fuse_reply_err(req, ENOENT);
    return fs_.open_now(req, ino, fi, *path, sftp::SSH_FXF_READ);
  }
  client::FileRef remote;
  std::shared_ptr<const sftp::Bytes> data;
  {
    std::lock_guard lock(mutex_);
    e->closed = true;  // the handle and the reservation go to the application's handle
    remote = std::move(e->remote);
    data = std::move(e->data);
  }
  ++served_;
  last_served_ = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
  fs_.finish_open(req, ino, &fi, remote, 0, std::nullopt, 0, {}, std::move(data), e->reserved);
}

void SmallFileReadAhead::discard(const EntryPtr& e, const char* why) {
  client::FileRef remote;
  {
    std::lock_guard lock(mutex_);
    if (e->closed) return;
    e->closed = true;
    remote = std::move(e->remote);
    e->data.reset();
  }
  ++discarded_;
  LOG_DEBUG("small file read ahead not used: %s: %s", e->path.c_str(), why);
  fs_.prefetch_budget->release(e->reserved);
  fs_.close_quietly(remote);
}

void SmallFileReadAhead::drop(Ino ino) {
  if (!enabled_) return;
  std::vector<EntryPtr> gone;
  {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto& e = it->second;
      if (e->ino != ino) {
        ++it;
        continue;
      }
      e->dropped = true;  // in flight or waited for: checked when it completes
      if (e->done && !e->taken) {
        gone.push_back(e);
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& e : gone) discard(e, "changed through the mount");
}

void SmallFileReadAhead::sweep() {
  std::vector<EntryPtr> gone;
  const auto now = Clock::now();
  const bool stopping = fs_.stopping;
  {
    std::lock_guard lock(mutex_);
    sweep_scheduled_ = false;
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto& e = it->second;
      if (e->done && !e->taken && (stopping || now - e->sent_at > max_age_)) {
        gone.push_back(e);
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = dirs_.begin(); it != dirs_.end();)
      it = now - it->second.listed_at > fs_.opt.dir_timeout ? dirs_.erase(it) : std::next(it);
  }
  for (auto& e : gone) discard(e, stopping ? "unmounted" : "not opened within the age limit");
  if (!stopping) schedule_sweep();
}

void SmallFileReadAhead::schedule_sweep() {
  {
    std::lock_guard lock(mutex_);
    if (sweep_scheduled_ || entries_.empty()) return;
    sweep_scheduled_ = true;
  }
  // Not a tracked call: an unmount need not wait for it (the client runs timers at its shutdown).
  std::weak_ptr<SmallFileReadAhead> weak = weak_from_this();
  fs_.client->after(max_age_ + std::chrono::milliseconds(100), [weak] {
    if (auto self = weak.lock()) self->sweep();
  });
}

SmallFileReadAhead::Counts SmallFileReadAhead::counts() const {
  Counts c;
  c.started = started_.load();
  c.served = served_.load();
  c.discarded = discarded_.load();
  std::lock_guard lock(mutex_);
  c.held = entries_.size();
  return c;
}

}  // namespace sftpfs::fs
