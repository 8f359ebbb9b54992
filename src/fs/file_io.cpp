// File data: open, create, read (prefetched, striped, split at the expected end of file), flush,
// release, fsync and copy_file_range.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

namespace {

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

}  // namespace

void Filesystem::Impl::read_range(const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length,
                client::Callback<sftp::Bytes> done) {
  read_range_on(h, h->remote, off, length, std::move(done));
}

void Filesystem::Impl::read_segment(const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length,
                  client::Callback<sftp::Bytes> done) {
  const size_t connections = client->connection_count();
  // Another connection is not ordered behind this one's WRITEs: a READ there could overtake a
  // write still in flight. Stripe only read-only handles while nothing is being written to the file.
  if (connections < 2 || h->writable || writes_in_flight(h->ino)) return read_range(h, off, length, std::move(done));
  if (off >= kStripeAfter && !h->stripes_requested.exchange(true)) {
    for (size_t i = 1; i < connections; ++i) {
      size_t index = (h->remote->connection + i) % connections;
      client->open_on(index, h->remote->path(), sftp::SSH_FXF_READ, sftp::Attrs{},
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

void Filesystem::Impl::read_range_on(const std::shared_ptr<FileHandle>& h, const client::FileRef& remote, uint64_t off,
                   uint32_t length, client::Callback<sftp::Bytes> done) {
  write_order.read(h->ino, off, off + length, remote->lane,
                   [this, h, remote, off, length, done = std::move(done)]() mutable {
                     read_range_now(h, remote, off, length, [this, h, remote, off, length, done = std::move(done)](
                                                                 Result<sftp::Bytes> r) mutable {
                       // Short: the file may end here only because a write past this range, in flight on
                       // another connection, has not extended it yet (the range is a hole it makes).
                       // Ask again behind every write in flight that ends beyond this offset.
                       if (!r || r->size() >= length || !writes_in_flight(h->ino)) return done(std::move(r));
                       write_order.read(h->ino, off, UINT64_MAX, remote->lane,
                                        [this, h, remote, off, length, done = std::move(done)]() mutable {
                                          read_range_now(h, remote, off, length, std::move(done));
                                        });
                     });
                   });
}

void Filesystem::Impl::read_range_now(const std::shared_ptr<FileHandle>& h, const client::FileRef& remote, uint64_t off,
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

void Filesystem::Impl::direct_read(fuse_req_t req, const std::shared_ptr<FileHandle>& h, uint64_t off, uint32_t length) {
  read_range(h, off, length, [this, req](Result<sftp::Bytes> r) {
    // A failed read is an error, never a short read or an end of file.
    if (!r) return reply_error(req, r.error());
    fuse_reply_buf(req, reinterpret_cast<const char*>(r->data()), r->size());
  });
}

bool Filesystem::Impl::keep_cache_for(const std::string& path) {
  if (opt.kernel_cache) return true;
  (void)path;
  // auto_cache: keep pages while attributes say the file is unchanged; FUSE_CAP_AUTO_INVAL_DATA
  // makes the kernel drop them when a later getattr shows a new mtime or size.
  return opt.auto_cache;
}

void Filesystem::Impl::finish_open(fuse_req_t req, Ino ino, fuse_file_info* fi, client::FileRef remote, uint64_t size,
                 std::optional<sftp::Attrs> entry_attrs, Ino parent, const std::string& name,
                 std::shared_ptr<const sftp::Bytes> preloaded, uint64_t preload_reserved) {
  bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
  bool append = (fi->flags & O_APPEND) != 0;
  auto handle = std::make_shared<FileHandle>(ino, remote, writable, append);
  handle->append_offset = size;
  handle->verify_size = writable && !(fi->flags & O_TRUNC) && !entry_attrs;  // entry_attrs: created
  handle->created = entry_attrs.has_value();
  handle->early_base = entry_attrs;
  std::string path = remote->path();
  const bool readable = (fi->flags & O_ACCMODE) != O_WRONLY;
  if (fi->flags & O_TRUNC) {
    data_changed(ino);  // other handles' prefetched bytes are gone
    floor_truncate(ino, 0);
    truncated_through_mount(ino, 0);  // and their writes so far (before this handle is registered)
  }
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
    const auto shortest_rtt = client->min_rtt(handle->remote->connection);
    config.max_window = std::max<uint64_t>(window_for_rtt(shortest_rtt, opt.prefetch_max_window), config.initial_window);
    std::weak_ptr<FileHandle> weak = handle;
    handle->prefetcher = Prefetcher::create(config, prefetch_budget,
                                            [this, weak](uint64_t off, uint32_t length, Prefetcher::FetchDone done) {
                                              auto h = weak.lock();
                                              if (!h) return done(Error::errno_error(EBADF, "file closed"));
                                              read_segment(h, off, length, std::move(done));
                                            });
  }
  if (preloaded && handle->prefetcher) {
    handle->prefetcher->preload(std::move(preloaded), preload_reserved);
  } else if (preloaded) {
    prefetch_budget->release(preload_reserved);
  }
  inodes.open_ref(ino);
  fi->fh = register_handle(handle, ino);
  fi->direct_io = opt.direct_io ? 1 : 0;
  fi->keep_cache = (!writable && keep_cache_for(path)) ? 1 : 0;
  if (writable || (fi->flags & O_TRUNC)) {
    caches.changed(path);
    node_changed(ino);
    small_files->drop(ino);
  }
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

void Filesystem::Impl::open(fuse_req_t req, Ino ino, fuse_file_info* fi) {
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
  if ((info.flags & O_ACCMODE) == O_RDONLY && small_files->open(req, ino, info, *path)) return;
  open_now(req, ino, info, *path, pflags);
}

void Filesystem::Impl::open_now(fuse_req_t req, Ino ino, fuse_file_info info, const std::string& path, uint32_t pflags) {
  // proftpd refuses SSH_FXF_APPEND (PERMISSION_DENIED) unless configured for it. The flag is not needed:
  // appends are written at our own end offset. So such a refusal is retried without it, and after
  // one the flag is left out for the rest of the session.
  if ((pflags & sftp::SSH_FXF_APPEND) && append_flag_refused.load()) pflags &= ~sftp::SSH_FXF_APPEND;
  client->open(path, pflags, sftp::Attrs{}, tracked([this, req, ino, info, path, pflags](Result<client::FileRef> r) mutable {
    if (!r && (pflags & sftp::SSH_FXF_APPEND) && is_status(r.error(), sftp::SSH_FX_PERMISSION_DENIED)) {
      if (!append_flag_refused.exchange(true)) LOG_DEBUG("the server refuses the append flag: writing at the end without it");
      return open_now(req, ino, info, path, pflags & ~sftp::SSH_FXF_APPEND);
    }
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

void Filesystem::Impl::create(fuse_req_t req, Ino parent, const char* name, mode_t mode, fuse_file_info* fi) {
  if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  auto path = inodes.child_path(parent, name);
  if (!path) return (void)fuse_reply_err(req, ENOENT);
  // Without SSH_FXF_APPEND, which proftpd refuses: the handle writes at the size the LSTAT below
  // shows (0 for a new file) and on from there, as for every append.
  uint32_t pflags = (open_pflags(fi->flags) & ~sftp::SSH_FXF_APPEND) | sftp::SSH_FXF_CREAT;
  if (fi->flags & O_EXCL) pflags |= sftp::SSH_FXF_EXCL;
  sftp::Attrs attrs;
  attrs.set_permissions(mode & 07777);
  std::string p = *path, n = name;
  fuse_file_info info = *fi;
  caches.negative.invalidate(p);
  caches.attrs.invalidate(p);
  // OPEN and the LSTAT that gives the entry's attributes (owner, mode after the server's umask, size
  // when the file existed) go back to back on one connection: one round trip. A stat of the parent
  // directory goes with them: the create moved its mtime, and unzip stats it before every file.
  size_t connection = client->pick_connection();
  const std::string dir = Caches::parent_path(p);
  const uint64_t dir_version = caches.attrs.version(dir);
  using Stats = std::pair<Result<sftp::Attrs>, std::optional<Result<sftp::Attrs>>>;
  auto [on_open, on_stats] = joined<Result<client::FileRef>, Stats>(
      [this, req, parent, n, p, info, dir_version](Result<client::FileRef> r, Stats stats) mutable {
        Result<sftp::Attrs>& a = stats.first;
        std::optional<Caches::AttrsAsked> dir_now;
        if (stats.second && *stats.second && (*stats.second)->has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) &&
            S_ISDIR((*stats.second)->permissions))
          dir_now = Caches::AttrsAsked{**stats.second, dir_version};
        if (!r) {
          Error error = r.take_error();
          caches.changed_unknown(p);
          // FAILURE is what servers say for EEXIST: the LSTAT says whether the name exists.
          if (is_status(error, sftp::SSH_FX_FAILURE) && a) return (void)fuse_reply_err(req, EEXIST);
          return reply_error(req, error);
        }
        client::FileRef remote = *r;
        auto created = [this, req, parent, n, p, info, remote, dir_now](const sftp::Attrs& attrs) mutable {
          caches.added(p, attrs, 0, dir_now);
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
  if (!caches.attrs.enabled()) {
    client->lstat_on(connection, p, tracked([on_stats](Result<sftp::Attrs> a) { on_stats({std::move(a), std::nullopt}); }));
    return;
  }
  auto [on_file, on_dir] = joined<Result<sftp::Attrs>, Result<sftp::Attrs>>(
      [on_stats](Result<sftp::Attrs> file, Result<sftp::Attrs> d) { on_stats({std::move(file), std::move(d)}); });
  client->lstat_on(connection, p, tracked(on_file));
  if (opt.follow_symlinks) {
    client->stat_on(connection, dir, tracked(on_dir));
  } else {
    client->lstat_on(connection, dir, tracked(on_dir));
  }
}

void Filesystem::Impl::release_handle(uint64_t fh) {
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
    // What the flush read back is still the file (nothing changed since): keep it cached.
    if (handle->writable && !read_back_current(handle)) node_changed(handle->ino);
    inodes.close_ref(handle->ino);
  });
}

void Filesystem::Impl::read(fuse_req_t req, Ino, size_t size, off_t off, fuse_file_info* fi) {
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

void Filesystem::Impl::flush(fuse_req_t req, Ino, fuse_file_info* fi) {
  auto handle = file_handle(fi);
  if (!handle) return (void)fuse_reply_err(req, 0);
  if (!handle->writable) return (void)fuse_reply_err(req, 0);
  bool nothing_in_flight;
  {
    std::lock_guard lock(handle->mutex);
    nothing_in_flight = handle->drained();
  }
  // Asked now, behind the writes, so it is answered in the round trip the flush waits for anyway.
  auto read_back = read_back_at_flush(handle);
  when_drained(handle, [this, req, handle, read_back, nothing_in_flight] {
    if (auto e = take_write_error(handle)) return reply_error(req, *e);
    uint64_t written_end = 0;
    {
      std::lock_guard lock(handle->mutex);
      if (handle->verify_size) std::swap(written_end, handle->written_end);
    }
    if (read_back && written_end == 0 && nothing_in_flight) {
      // Nothing to wait for: the close is answered now, the read-back kept when it comes.
      when_read_back(read_back, [this, handle, read_back](Result<sftp::Attrs> a) {
        if (a) keep_read_back(handle, *read_back, *a);
      });
      return (void)fuse_reply_err(req, 0);
    }
    auto check = [this, req, handle, written_end, read_back](Result<sftp::Attrs> a) {
      if (written_end != 0 && a && a->has(sftp::SSH_FILEXFER_ATTR_SIZE) && a->size < written_end)
        return writes_lost(req, handle, written_end, *a);
      if (read_back && a) keep_read_back(handle, *read_back, *a);
      fuse_reply_err(req, 0);
    };
    if (read_back) return when_read_back(read_back, check);
    if (written_end == 0) return (void)fuse_reply_err(req, 0);
    client->fstat(handle->remote, tracked(check));
  });
}

void Filesystem::Impl::writes_lost(fuse_req_t req, const std::shared_ptr<FileHandle>& handle, uint64_t written_end,
                                   const sftp::Attrs& a) {
  // Did the writes land? A file never ends before the end of what was written to it; one that
  // does lost them (rclone drops writes at an offset after a reopen, acknowledged).
  LOG_WARN("the server acknowledged writes up to byte %llu but the file has %llu bytes: writes lost",
           static_cast<unsigned long long>(written_end), static_cast<unsigned long long>(a.size));
  if (auto path = inodes.path(handle->ino)) {
    caches.changed(*path);
    caches.attrs.put(*path, CachedAttrs{a, 0});
  }
  data_changed(handle->ino);
  if (session) fuse_lowlevel_notify_inval_inode(session, handle->ino, -1, 0);
  fuse_reply_err(req, EIO);
}

void Filesystem::Impl::release(fuse_req_t req, Ino, fuse_file_info* fi) {
  release_handle(fi->fh);
  fuse_reply_err(req, 0);
}

void Filesystem::Impl::fsync(fuse_req_t req, Ino, int, fuse_file_info* fi) {
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

void Filesystem::Impl::copy_file_range(fuse_req_t req, fuse_file_info* fi_in, off_t off_in, fuse_file_info* fi_out, off_t off_out,
                     size_t len, int flags) {
  // ENOSYS: the kernel stops asking and copies through read/write itself.
  if (!client->features().has(sftp::kExtCopyData)) return (void)fuse_reply_err(req, ENOSYS);
  if (flags != 0) return (void)fuse_reply_err(req, EINVAL);
  auto in = file_handle(fi_in);
  auto out = file_handle(fi_out);
  if (!in || !out) return (void)fuse_reply_err(req, EBADF);
  if (off_in < 0 || off_out < 0) return (void)fuse_reply_err(req, EINVAL);
  // Inside one file: OpenSSH refuses copy-data between one handle, or two opened by one name (FAILURE).
  // EOPNOTSUPP makes the kernel copy this range through read and write (ENOSYS would turn server-side
  // copies off for the whole mount).
  if (in->ino == out->ino || in->remote->opened_as() == out->remote->opened_as())
    return (void)fuse_reply_err(req, EOPNOTSUPP);
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
        const size_t connection = out->remote->lane;
        auto on_copied = tracked([this, req, out, n](std::pair<WriteOrder::Token, Status> r) {
          write_order.complete(out->ino, r.first);
          Status s = std::move(r.second);
          floor_write_done(out->ino, n);
          node_changed(out->ino);
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

}  // namespace sftpfs::fs
