// Directories: mkdir, rmdir, opendir, readdir(plus), releasedir, and listings read ahead.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

void Filesystem::Impl::dir_has_entries(const std::string& path, std::function<void(Result<bool>)> done) {
  client->opendir(path, tracked([this, path, done = std::move(done)](Result<client::FileRef> dir) mutable {
    if (!dir) return done(dir.take_error());
    auto file = *dir;
    read_until_entry(file, std::make_shared<ListingGuard>(path), std::move(done));
  }));
}

void Filesystem::Impl::read_until_entry(client::FileRef dir, std::shared_ptr<ListingGuard> guard,
                                        std::function<void(Result<bool>)> done) {
  client->readdir(dir, tracked([this, dir, guard, done = std::move(done)](Result<std::vector<sftp::NameEntry>> r) mutable {
    if (!r) {
      close_quietly(dir);
      return done(r.take_error());
    }
    if (r->empty()) {
      close_quietly(dir);
      return done(false);
    }
    // Only "." and ".." (and names no directory has) are taken out; a server that sends them forever
    // is stopped by the guard.
    if (auto st = guard->take(*r); !st) {
      close_quietly(dir);
      return done(st.take_error());
    }
    if (!r->empty()) {
      close_quietly(dir);
      return done(true);
    }
    read_until_entry(dir, std::move(guard), std::move(done));
  }));
}

void Filesystem::Impl::mkdir(fuse_req_t req, Ino parent, const char* name, mode_t mode) {
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

void Filesystem::Impl::rmdir(fuse_req_t req, Ino parent, const char* name) {
  auto path = inodes.child_path(parent, name);
  if (!path) return (void)fuse_reply_err(req, ENOENT);
  std::string p = *path, n = name;
  client->rmdir(p, tracked([this, req, parent, n, p](Status s) {
    if (s) {
      caches.removed(p);
      (void)inodes.unlink(parent, n);
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

void Filesystem::Impl::opendir(fuse_req_t req, Ino ino, fuse_file_info* fi) {
  auto path = inodes.path(ino);
  if (!path) return (void)fuse_reply_err(req, ENOENT);
  small_files->directory_opened(*path);  // a walk may read its small files next
  read_next_siblings_ahead(*path);
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

std::shared_ptr<DirHandle> Filesystem::Impl::listing_being_read(const std::string& path) {
  std::lock_guard lock(ahead_mutex);
  auto it = listings_ahead.find(path);
  return it == listings_ahead.end() ? nullptr : it->second;
}

bool Filesystem::Impl::when_listing_read(const std::string& path, std::function<void()> then) {
  auto ahead = listing_being_read(path);
  if (!ahead) return false;
  {
    std::lock_guard lock(ahead->mutex);
    if (ahead->complete) return false;  // done: its listing (if kept) is in the cache already
    ahead->on_complete.push_back(std::move(then));
  }
  return true;
}

std::shared_ptr<DirHandle> Filesystem::Impl::pending_view(const std::shared_ptr<DirHandle>& ahead, Ino ino) {
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

void Filesystem::Impl::copy_completion(DirHandle& from, DirHandle& to) {
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

void Filesystem::Impl::read_listing_ahead(const std::string& path, bool again) {
  if (!opt.cache || !caches.dirs.enabled() || opt.follow_symlinks) return;
  if (!again && caches.dirs.get(path)) return;
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

void Filesystem::Impl::read_listing_again(const std::string& dir_path, std::chrono::milliseconds age) {
  if (negative_timeout <= 0 || seconds(age) < negative_timeout / 2) return;
  auto listing = caches.dirs.get(dir_path);
  if (listing && *listing && (*listing)->size() > kMaxListingReadAgain) return;
  read_listing_ahead(dir_path, /*again=*/true);  // at most one reading per directory at a time
}

void Filesystem::Impl::read_subdirectories_ahead(const std::string& path, const DirListing& listing) {
  if (!listing || !opt.cache) return;
  size_t started = 0;
  for (const auto& e : *listing) {
    if (started >= kMaxSubdirsAhead) break;
    if (!e.attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) || !S_ISDIR(e.attrs.permissions)) continue;
    read_listing_ahead(InodeTable::join(path, e.name));
    ++started;
  }
}

void Filesystem::Impl::read_next_siblings_ahead(const std::string& path) {
  if (!opt.cache || path == "/") return;
  const std::string parent = Caches::parent_path(path);
  const auto now = std::chrono::steady_clock::now();
  size_t hint;
  {
    std::lock_guard lock(ahead_mutex);
    if (walked_parents.size() >= kMaxListingsAhead) walked_parents.clear();
    auto [it, first] = walked_parents.try_emplace(parent, WalkedParent{now, 0});
    const bool walking = !first && now - it->second.last_open < kSiblingWalk;
    it->second.last_open = now;
    hint = it->second.position;
    if (!walking) return;
  }
  auto cached = caches.dirs.get(parent);
  if (!cached || !*cached) return;
  const DirListing listing = *cached;
  const size_t n = listing->size();
  const std::string name = Caches::leaf_name(path);
  // A walk in listing order finds the name right after the last one: no scan of a large parent.
  size_t at = n;
  for (size_t k = 0; k < n; ++k) {
    if ((*listing)[(hint + k) % n].name == name) {
      at = (hint + k) % n;
      break;
    }
  }
  if (at == n) return;
  {
    std::lock_guard lock(ahead_mutex);
    if (auto it = walked_parents.find(parent); it != walked_parents.end()) it->second.position = at;
  }
  size_t looked = 0;
  for (size_t j = at + 1; j < listing->size() && looked < kSiblingsAhead; ++j) {
    const DirEntry& e = (*listing)[j];
    if (!e.attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) || !S_ISDIR(e.attrs.permissions)) continue;
    ++looked;
    const std::string sibling = InodeTable::join(parent, e.name);
    if (!caches.listing_for_readdir(sibling)) read_listing_ahead(sibling, /*again=*/true);
  }
}

int Filesystem::Impl::initial_readdir_window(const std::string& path) {
  auto cached = caches.attrs.get(path);
  if (!cached || !cached->attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE)) return kReaddirInitialInFlight;
  uint64_t guess = cached->attrs.size / 2048;
  return static_cast<int>(std::clamp<uint64_t>(guess, kReaddirInitialInFlight, kReaddirMaxInFlight));
}

void Filesystem::Impl::fetch_more(const std::shared_ptr<DirHandle>& dir) {
  for (;;) {
    uint64_t seq;
    client::FileRef remote;
    bool finish_now = false;
    {
      std::lock_guard lock(dir->mutex);
      if (dir->issued == 0) dir->in_flight_limit = initial_readdir_window(dir->path);
      if (stopping && !dir->eof_seq && !dir->error) {
        dir->error = Error::errno_error(ESHUTDOWN, "unmounted while listing " + dir->path);
        finish_now = dir->unanswered.empty();  // else the last reply finishes it
      }
      if (!finish_now && (dir->eof_seq || dir->error || !dir->remote ||
                          dir->unanswered.size() >= static_cast<size_t>(dir->in_flight_limit)))
        return;
      if (!finish_now) {
        seq = dir->issued++;
        dir->unanswered.insert(seq);
        remote = dir->remote;
      } else {
        if (dir->finished) return;
        dir->finished = true;
      }
    }
    if (finish_now) return finish_listing(dir);
    client->readdir(remote, tracked([this, dir, seq](Result<std::vector<sftp::NameEntry>> r) {
      bool done = false;
      {
        std::lock_guard lock(dir->mutex);
        dir->unanswered.erase(seq);
        if (dir->finished) {
          // Sent before the EOF came, answered after the listing was done: nothing to add.
        } else if (!r) {
          if (!dir->eof_seq && !dir->error) dir->error = r.error();
        } else if (r->empty()) {
          dir->eof_seq = std::min(dir->eof_seq.value_or(seq), seq);
        } else if (auto st = dir->guard.take(*r); !st) {
          // Names from the server are checked here (listing_guard.hpp): one that never ends, or
          // starts over, fails the listing rather than growing it forever.
          if (!dir->eof_seq && !dir->error) dir->error = st.error();
        } else {
          dir->batches.emplace(seq, std::move(*r));
          dir->in_flight_limit = std::min(kReaddirMaxInFlight, dir->in_flight_limit + kReaddirGrowth);
        }
        const bool earlier_answered =
            dir->eof_seq && (dir->unanswered.empty() || *dir->unanswered.begin() > *dir->eof_seq);
        done = !dir->finished && (dir->error ? dir->unanswered.empty() : earlier_answered);
        if (done) dir->finished = true;
      }
      if (done) return finish_listing(dir);
      fetch_more(dir);
    }));
  }
}

void Filesystem::Impl::finish_listing(const std::shared_ptr<DirHandle>& dir) {
  std::map<uint64_t, std::vector<sftp::NameEntry>> batches;
  client::FileRef remote;
  std::optional<Error> error;
  {
    std::lock_guard lock(dir->mutex);
    batches.swap(dir->batches);
    dir->guard.forget();
    remote = std::move(dir->remote);
    dir->remote.reset();
    error = dir->error;
  }
  close_quietly(remote);
  auto entries = std::make_shared<std::vector<DirEntry>>();
  if (!error) {
    for (auto& [seq, names] : batches) {
      for (auto& n : names) {  // checked as they came (ListingGuard): no '/', '.', '..', repeats
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

void Filesystem::Impl::readdir(fuse_req_t req, Ino, size_t size, off_t off, fuse_file_info* fi, bool plus) {
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

void Filesystem::Impl::serve_readdir(fuse_req_t req, const std::shared_ptr<DirHandle>& dir, size_t size, off_t off, bool plus) {
  DirListing listing;
  std::optional<Error> error;
  {
    std::lock_guard lock(dir->mutex);
    listing = dir->listing;
    error = dir->error;
  }
  if (error) return reply_error(req, *error);
  size_t total = 2 + listing->size();
  // The kernel asks past the last entry once the application has read them all (that last call is
  // often a plain readdir): a walk opens its files next. Only names the kernel has nodes for (from
  // readdirplus or lookups) are read ahead.
  if (off >= 0 && static_cast<size_t>(off) >= total && dir->ino != 0)
    small_files->listing_read(dir->ino, dir->path);
  std::vector<char> buf(size);
  size_t used = 0;
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

void Filesystem::Impl::release_dir(uint64_t fh) {
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

void Filesystem::Impl::releasedir(fuse_req_t req, Ino, fuse_file_info* fi) {
  release_dir(fi->fh);
  fuse_reply_err(req, 0);
}

}  // namespace sftpfs::fs
