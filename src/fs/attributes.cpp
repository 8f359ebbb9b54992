// Attributes: getattr, setattr (chmod, chown, truncate, utimens), statfs, and the kernel's view of
// a node's attributes (link count, size floor while writes are in flight).
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {


void Filesystem::Impl::note_file_attrs(Ino ino, const sftp::Attrs& attrs) {
  if (!attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE) || !attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) return;
  if (inodes.note_data_signature(ino, attrs.size, attrs.mtime)) data_changed(ino);
}

Result<struct stat> Filesystem::Impl::kernel_stat(Ino ino, const sftp::Attrs& attrs, uint32_t nlink_hint) {
  if (nlink_hint != 0) inodes.set_nlink(ino, nlink_hint);
  if (attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) inodes.note_times(ino, attrs.atime, attrs.mtime);
  uint32_t nlink = nlink_hint != 0 ? nlink_hint : inodes.nlink(ino);
  auto st = attrs_to_kernel_stat(attrs, ino, nlink, opt);
  if (!st) return st;
  if (nlink_hint == 0 && inodes.unlinked(ino)) st->st_nlink = 0;  // open, and every name removed
  if (S_ISREG(st->st_mode)) {
    note_file_attrs(ino, attrs);
    if (auto floor = floor_of(ino); floor && static_cast<uint64_t>(st->st_size) < *floor) {
      st->st_size = static_cast<off_t>(*floor);
      st->st_blocks = (st->st_size + 511) / 512;
    }
  }
  return st;
}

void Filesystem::Impl::reply_attr(fuse_req_t req, Ino ino, const sftp::Attrs& attrs, uint32_t nlink_hint) {
  if (attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) inodes.set_type(ino, attrs.permissions & S_IFMT);
  auto st = kernel_stat(ino, attrs, nlink_hint);
  if (!st) return reply_error(req, st.error());
  fuse_reply_attr(req, &*st, attr_timeout);
}

void Filesystem::Impl::reply_attr_uncached(fuse_req_t req, Ino ino, const sftp::Attrs& attrs) {
  auto st = kernel_stat(ino, attrs, 0);
  if (!st) return reply_error(req, st.error());
  fuse_reply_attr(req, &*st, 0.0);
  // A timeout of 0 still holds within the kernel's clock tick: drop them outright.
  if (session) fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
}

void Filesystem::Impl::stat_path(const std::string& path, client::Callback<sftp::Attrs> done) {
  if (opt.follow_symlinks) {
    client->stat(path, tracked(std::move(done)));
  } else {
    client->lstat(path, tracked(std::move(done)));
  }
}

void Filesystem::Impl::node_attrs(Ino ino, const fuse_file_info* fi, client::Callback<sftp::Attrs> done) {
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
  // Changes answered early and not yet confirmed: ask behind them, on their handle's connection.
  auto early = handle ? nullptr : handle_with_early_changes(ino);
  if (early) handle = early;
  const uint64_t asked_at = write_epoch.load();
  // A stat of a file being written through this mount (git's fstat between write and close; the
  // kernel's getattr carries no handle for it): asked through the writing handle behind its writes,
  // as its flush would, and kept as that handle's read-back (flush_read_back.cpp).
  if (!early) {
    auto writer = handle && handle->writable ? handle : handle_to_read_back(ino);
    if (auto rb = writer ? start_read_back(writer) : nullptr) {
      when_read_back(rb, [this, ino, writer, rb, asked_at, done = std::move(done)](Result<sftp::Attrs> r) {
        if (r) {
          floor_confirmed(ino, asked_at);
          keep_read_back(writer, *rb, *r);
        }
        done(std::move(r));
      });
      return;
    }
  }
  if (handle && (!path || fi || early)) {
    client->fstat(handle->remote, tracked([this, ino, asked_at, done = std::move(done)](Result<sftp::Attrs> r) {
      if (r) floor_confirmed(ino, asked_at);
      done(std::move(r));
    }));
    return;
  }
  if (!path) {
    done(Error::status(sftp::SSH_FX_NO_SUCH_FILE, "inode has no path"));
    return;
  }
  std::string p = *path;
  stat_path(p, [this, ino, asked_at, p, done = std::move(done)](Result<sftp::Attrs> r) {
    if (r && floor_confirmed(ino, asked_at)) caches.attrs.put(p, CachedAttrs{*r, 0});
    done(std::move(r));
  });
}

void Filesystem::Impl::getattr(fuse_req_t req, Ino ino, fuse_file_info* fi) {
  // `ls -d` of the mount point and shells that stat it must not hang while the server is unreachable:
  // its attributes as last seen.
  std::optional<sftp::Attrs> known;
  if (ino == FUSE_ROOT_ID) {
    std::lock_guard lock(last_known_mutex);
    known = last_root_attrs;
  }
  if (known && !client->alive()) return reply_attr(req, ino, *known);
  // A link that has just gone silent is not known dead yet: after kLastKnownAfter without an answer,
  // the last known attributes answer instead (whichever comes first replies).
  auto answered = std::make_shared<std::atomic<bool>>(false);
  if (known)
    client->after(kLastKnownAfter, [fallback = tracked([this, req, ino, known, answered](int) {
                    if (!answered->exchange(true)) reply_attr(req, ino, *known);
                  })]() mutable { fallback(0); });
  node_attrs(ino, fi, [this, req, ino, answered](Result<sftp::Attrs> r) {
    if (r && ino == FUSE_ROOT_ID) {
      std::lock_guard lock(last_known_mutex);
      last_root_attrs = *r;
    }
    if (answered->exchange(true)) return;
    if (!r) return reply_error(req, r.error());
    reply_attr(req, ino, *r);
  });
}

void Filesystem::Impl::access(fuse_req_t req, Ino ino, int mask) {
  // The server checks every real use as the remote user, so R_OK and W_OK are left to it (yes here,
  // as before this operation existed). X_OK asks what execve would allow: the kernel refuses to run a
  // regular file without any execute bit, root included, so access(2) says the same; a directory
  // without execute bits can be searched by root only.
  if (!(mask & X_OK)) return (void)fuse_reply_err(req, 0);
  const fuse_ctx* ctx = fuse_req_ctx(req);
  const bool root = ctx && ctx->uid == 0;
  node_attrs(ino, nullptr, [this, req, ino, root](Result<sftp::Attrs> r) {
    if (!r) return reply_error(req, r.error());
    auto st = kernel_stat(ino, *r, 0);
    if (!st || !r->has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) return (void)fuse_reply_err(req, 0);
    const bool any_x = (st->st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) != 0;
    const bool allowed = any_x || (root && S_ISDIR(st->st_mode));
    fuse_reply_err(req, allowed ? 0 : EACCES);
  });
}

void Filesystem::Impl::setattr(fuse_req_t req, Ino ino, const struct stat* attr, int to_set, fuse_file_info* fi) {
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
  // A symlink's own times without lsetstat@openssh.com (gesftpserver, paramiko, proftpd, asyncssh):
  // SETSTAT would change the target's, so they are left as they are, and cp -a / tar finish the
  // copy instead of failing on the last step. The link's times are its own and matter little.
  if (S_ISLNK(inodes.type(ino)) && !r.mode && !r.uid && !r.gid && !r.size &&
      !client->features().has(sftp::kExtLsetstat)) {
    LOG_DEBUG("setattr: the server has no lsetstat; times of symlink inode %llu left unchanged",
              static_cast<unsigned long long>(ino));
    return getattr(req, ino, fi);
  }

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
      // fchmod/futimens/fchown on a file this mount created and holds open: answered now (rule 6).
      if (answer_setattr_early(req, ino, r, sent)) return;
      // Without a size change and with the attributes we had, the result is known; otherwise the
      // attributes are read back by a request sent right behind the change (same connection,
      // answered in order): still one round trip.
      // A change of mode, owner or size is always read back (same round trip): some servers (rclone)
      // acknowledge a chmod or a truncation they did not make, and the mount must show what the
      // server has, and the caller get an error, at once.
      const bool known_result = current && !times_only && !r.size && !r.mode && !r.uid && !r.gid && opt.cache;
      std::function<void(Status, Result<sftp::Attrs>)> finish =
          [this, req, ino, r, path, current, sent, known_result](Status s, Result<sftp::Attrs> read_back) {
            if (!s) return reply_error(req, s.error());
            if (r.size) {
              floor_truncate(ino, *r.size);
              truncated_through_mount(ino, *r.size);
              data_changed(ino);  // reads prefetched while the truncation was on its way
            }
            attributes_changed(ino, r, current);
            sftp::Attrs now;
            if (known_result) {
              now = merge_attrs(*current, sent);
            } else {
              if (!read_back) return reply_error(req, read_back.error());
              now = *read_back;
              if (int err = ignored_change(r, sent, now)) {
                // The server said OK and did not do it: show its truth, fail the call.
                if (path) caches.attrs.put(*path, CachedAttrs{now, 0});
                if (session) fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
                return (void)fuse_reply_err(req, err);
              }
            }
            if (path) caches.attrs.put(*path, CachedAttrs{now, 0});
            // Early answers on a created handle of this file build on what the server has now.
            for (auto& h : files_of(ino)) {
              std::lock_guard lock(h->mutex);
              if (!h->created) continue;
              if (known_result) {
                h->early_base.reset();
              } else {
                h->early_base = now;
                h->early_base_written = h->bytes_written;
              }
            }
            reply_attr(req, ino, now);
          };
      // A change must not be overtaken by this file's writes still in flight on another connection:
      // the server would apply such a write after it (moving the mtime tar or cp -p just set). Like a
      // read, it waits for those; writes on its own connection are ahead of it anyway.
      // With a handle that answers changes early, on its connection: behind those changes, in order.
      auto early = handle ? nullptr : early_change_handle(ino);
      const size_t connection = handle ? handle->remote->connection
                                : early ? early->remote->connection
                                        : client->pick_connection();
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

namespace {

struct statvfs to_statvfs(const sftp::Statvfs& r) {
  struct statvfs st {};
  st.f_bsize = r.bsize;
  st.f_frsize = r.frsize != 0 ? r.frsize : r.bsize;
  st.f_blocks = r.blocks;
  st.f_bfree = r.bfree;
  st.f_bavail = r.bavail;
  st.f_files = r.files;
  st.f_ffree = r.ffree;
  st.f_favail = r.favail;
  st.f_fsid = r.fsid;
  st.f_namemax = r.namemax != 0 ? std::min<uint64_t>(r.namemax, kNameMax) : kNameMax;
  return st;
}

}  // namespace

void Filesystem::Impl::statfs(fuse_req_t req, Ino) {
  auto defaults = [req] {
    // The server will not say (no statvfs@openssh.com, or one that fails): sizes of 0, never invented
    // numbers shown as real ones. df lists such a filesystem only with -a, with a size of 0; an
    // error instead would fail every statfs(2) caller (file managers, `df` of all mounts).
    struct statvfs st {};
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_namemax = kNameMax;
    fuse_reply_statfs(req, &st);
  };
  if (!client->features().has(sftp::kExtStatvfs)) return defaults();
  // df must not hang while the server is unreachable: the last numbers, at once when the link is
  // known down, else after kLastKnownAfter without an answer.
  std::optional<struct statvfs> known;
  {
    std::lock_guard lock(last_known_mutex);
    known = last_statvfs;
  }
  if (known && !client->alive()) return (void)fuse_reply_statfs(req, &*known);
  auto answered = std::make_shared<std::atomic<bool>>(false);
  if (known)
    client->after(kLastKnownAfter, [fallback = tracked([req, known, answered](int) {
                    if (!answered->exchange(true)) fuse_reply_statfs(req, &*known);
                  })]() mutable { fallback(0); });
  client->statvfs(opt.remote_root, tracked([this, req, defaults, answered](Result<sftp::Statvfs> r) {
    if (r) {
      std::lock_guard lock(last_known_mutex);
      last_statvfs = to_statvfs(*r);
    }
    if (answered->exchange(true)) return;
    if (!r) {
      if (r.error().kind == Error::Kind::unsupported || is_status(r.error(), sftp::SSH_FX_OP_UNSUPPORTED)) {
        return defaults();
      }
      return reply_error(req, r.error());
    }
    struct statvfs st = to_statvfs(*r);
    fuse_reply_statfs(req, &st);
  }));
}

}  // namespace sftpfs::fs
