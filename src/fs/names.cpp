// The namespace: lookup, forget, readlink, mknod, symlink, unlink, rename, link, and the entry
// replies they make.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

void Filesystem::Impl::reply_error(fuse_req_t req, const Error& e) {
  int err = errno_edge(e);
  if (err != ENOENT && err != EEXIST) LOG_DEBUG("request failed: %s (errno %d)", e.message.c_str(), err);
  fuse_reply_err(req, err);
}

std::optional<Ino> Filesystem::Impl::make_entry(Ino parent, const std::string& name, const sftp::Attrs& attrs, uint32_t nlink_hint,
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

void Filesystem::Impl::reply_entry(fuse_req_t req, Ino parent, const std::string& name, const sftp::Attrs& attrs,
                 uint32_t nlink_hint) {
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

void Filesystem::Impl::names_lost_link(Ino ino) {
  // Its other names (hard links made through this mount) show the new count: forget what we had.
  node_changed(ino);
}

void Filesystem::Impl::node_changed(Ino ino) {
  for (const auto& path : inodes.paths(ino)) caches.changed(path);
}

void Filesystem::Impl::attributes_changed(Ino ino, const SetattrRequest& r, const std::optional<sftp::Attrs>& before) {
  note_local_change(ino);
  // chmod, chown or utimens change no name in a directory: its listing stays (rsync and unzip chmod
  // each directory they make, then look up every name in it), unless the change could take away
  // the access a readdir or lookup has: a read or search bit removed, an owner or group changed, or
  // a mode change from a mode not known.
  const bool access_kept =
      !r.uid && !r.gid && !r.size &&
      (!r.mode || (before && before->has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) &&
                   (before->permissions & 0555 & ~*r.mode) == 0));
  if (!access_kept || !S_ISDIR(inodes.type(ino))) return node_changed(ino);
  for (const auto& path : inodes.paths(ino)) caches.dir_attributes_changed(path);
}

void Filesystem::Impl::reply_negative(fuse_req_t req) {
  reply_negative(req, std::chrono::milliseconds{0});
}

void Filesystem::Impl::reply_negative(fuse_req_t req, std::chrono::milliseconds age) {
  const double remaining = negative_timeout - seconds(age);
  if (remaining > 0) {
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    e.ino = 0;  // a negative entry the kernel may cache for entry_timeout
    e.entry_timeout = remaining;
    fuse_reply_entry(req, &e);
  } else {
    fuse_reply_err(req, ENOENT);
  }
}

void Filesystem::Impl::lookup(fuse_req_t req, Ino parent, const char* name) {
  if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  lookup_name(req, parent, name, true);
}

void Filesystem::Impl::lookup_name(fuse_req_t req, Ino parent, const std::string& n, bool may_wait) {
  auto path = inodes.child_path(parent, n);
  if (!path) return (void)fuse_reply_err(req, ENOENT);
  // The negative rule: a missing name is remembered (here and, through the entry timeout, by the
  // kernel) at most negative_timeout from when the server said it was missing, so a name created
  // elsewhere shows within negative_timeout of its creation. A cached "missing" or a listing without
  // the name (read by the application or ahead of it: the server said the same) answers only for
  // what is left of that time.
  if (auto age = caches.negative.age(*path)) return reply_negative(req, *age);
  if (auto cached = caches.attrs.get(*path)) return reply_entry(req, parent, n, cached->attrs, cached->nlink);
  if (!opt.follow_symlinks) {
    const std::string dir_path = Caches::parent_path(*path);
    if (auto listed = caches.from_listing(dir_path, n)) {
      if (!*listed) {
        auto age = caches.dirs.age(dir_path);
        // Past half of negative_timeout, or past all of it, the listing is read again (at most one
        // reading at a time), so the next lookups of absent names in this directory are answered here
        // too, from a listing that says what the server has now.
        if (age) read_listing_again(dir_path, *age);
        if (age && seconds(*age) < negative_timeout) return reply_negative(req, *age);
        // Older than that: the server says (below).
      }
      // Listed, but its attributes changed since (unknown here): ask below.
      if (*listed && (*listed)->attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) {
        return reply_entry(req, parent, n, (*listed)->attrs, (*listed)->nlink);
      }
    } else if (may_wait && opt.cache) {
      // The directory's listing is already being read (a lookup before this one started it, or a
      // walk read it ahead): it answers in about the time an LSTAT would, and then for every
      // sibling too. Asked again once it is in; without a usable listing then, the server says.
      if (when_listing_read(dir_path, [this, req, parent, n] { lookup_name(req, parent, n, false); })) return;
      // Its siblings will likely be looked up too (git status, make, gcc's -I directories): read
      // the directory, once.
      read_listing_ahead(dir_path);
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
    // A listing that lacks this name is out of date (created elsewhere since, and older than
    // negative_timeout, or it would have answered): drop it, so the next readdir asks the server.
    const std::string dir_path = Caches::parent_path(p);
    if (auto listed = caches.from_listing(dir_path, n); listed && !*listed) caches.dirs.invalidate(dir_path);
    reply_entry(req, parent, n, *r);
  });
}

void Filesystem::Impl::forget(Ino ino, uint64_t nlookup) {
  inodes.forget(ino, nlookup);
  if (!inodes.contains(ino)) {
    std::lock_guard lock(floors_mutex);
    auto it = floors.find(ino);
    if (it != floors.end() && it->second.pending == 0) floors.erase(it);  // nobody asks for its size now
    local_changes.erase(ino);
  }
}

void Filesystem::Impl::readlink(fuse_req_t req, Ino ino) {
  auto path = inodes.path(ino);
  if (!path) return (void)fuse_reply_err(req, ENOENT);
  client->readlink(*path, tracked([this, req, p = *path](Result<std::string> r) {
    if (!r) return reply_error(req, r.error());
    if (opt.transform_symlinks || opt.contain_symlinks) {
      auto shown = shown_symlink_target(opt.remote_root, p, *r, {opt.transform_symlinks, opt.contain_symlinks});
      if (!shown) return reply_error(req, shown.error());
      return (void)fuse_reply_readlink(req, shown->c_str());
    }
    fuse_reply_readlink(req, r->c_str());
  }));
}

void Filesystem::Impl::create_and_stat(fuse_req_t req, Ino parent, const std::string& name, const std::string& path,
                     SendCreating send, std::function<void(fuse_req_t, const sftp::Attrs&)> on_created,
                     bool after) {
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
  if (after) {
    return send(connection, tracked([this, connection, path, on_done, on_stat](Status s) {
      on_done(std::move(s));
      client->lstat_on(connection, path, tracked(on_stat));
    }));
  }
  send(connection, tracked(on_done));
  client->lstat_on(connection, path, tracked(on_stat));
}

void Filesystem::Impl::mknod(fuse_req_t req, Ino parent, const char* name, mode_t mode, dev_t) {
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

void Filesystem::Impl::symlink(fuse_req_t req, const char* target, Ino parent, const char* name) {
  if (name_too_long(name)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  auto path = inodes.child_path(parent, name);
  if (!path) return (void)fuse_reply_err(req, ENOENT);
  std::string p = *path, n = name, t = target;
  create_and_stat(
      req, parent, n, p,
      [this, p, t](size_t connection, client::Done done) { client->symlink_on(connection, t, p, std::move(done)); },
      [this, parent, n, p, t](fuse_req_t rq, const sftp::Attrs& made) {
        // What we made is a symlink, whatever the server's LSTAT says (proftpd's follows the link):
        // an entry of another type fails symlink(2) with EIO in the kernel.
        sftp::Attrs a = made;
        if (!a.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) || !S_ISLNK(a.permissions)) {
          a.set_permissions(S_IFLNK | 0777);
          a.flags |= sftp::SSH_FILEXFER_ATTR_SIZE;
          a.size = t.size();
        }
        caches.added(p, a);
        reply_entry(rq, parent, n, a);
      },
      !client->symlink_order_known());
}

void Filesystem::Impl::unlink(fuse_req_t req, Ino parent, const char* name) {
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
    if (auto ino = inodes.unlink(parent, n)) names_lost_link(*ino);
    fuse_reply_err(req, 0);
  }));
}

namespace {
// How servers refuse a plain RENAME onto an existing name: FAILURE (OpenSSH, paramiko) or
// FILE_ALREADY_EXISTS (proftpd, asyncssh, gesftpserver), SFTP v3 having no code for it.
bool refused_as_existing(const Error& e) {
  return is_status(e, sftp::SSH_FX_FAILURE) || is_status(e, sftp::SSH_FX_FILE_ALREADY_EXISTS);
}
}  // namespace

void Filesystem::Impl::rename(fuse_req_t req, Ino parent, const char* name, Ino newparent, const char* newname, unsigned flags) {
  if (flags & RENAME_EXCHANGE) return (void)fuse_reply_err(req, EINVAL);  // SFTP cannot swap atomically
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE)) return (void)fuse_reply_err(req, EINVAL);
  if (name_too_long(newname)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  auto from = inodes.child_path(parent, name);
  auto to = inodes.child_path(newparent, newname);
  if (!from || !to) return (void)fuse_reply_err(req, ENOENT);
  std::string f = *from, t = *to, n = name, nn = newname;
  // Two names of one file (a hard link made through this mount): nothing to do (POSIX). The kernel
  // normally sees that itself; a server without posix-rename would remove the target first.
  if (auto from_ino = inodes.find(parent, n); from_ino && from_ino == inodes.find(newparent, nn)) {
    return (void)fuse_reply_err(req, 0);
  }

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
      if (auto replaced = inodes.rename(parent, n, newparent, nn)) names_lost_link(*replaced);
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

  // Whether plain RENAME refuses an existing target (the SFTP v3 rule; OpenSSH, proftpd, gesftpserver,
  // asyncssh and paramiko do) or replaces it (rclone) is learned from the first rename through this
  // mount of a regular file onto a regular file: sent as plain RENAME, it either replaces (learned:
  // replaces) or is refused and then done by posix-rename (learned: refuses; one round trip more,
  // once). Only then may RENAME_NOREPLACE be one plain RENAME without an LSTAT first.
  const auto from_ino = inodes.find(parent, n);
  const auto to_ino = inodes.find(newparent, nn);
  const bool learn = !(flags & RENAME_NOREPLACE) && plain_rename_refuses.load() == 0 && from_ino && to_ino &&
                     S_ISREG(inodes.type(*from_ino)) && S_ISREG(inodes.type(*to_ino));
  auto learned = [this](bool refuses) {
    int unknown = 0;
    if (plain_rename_refuses.compare_exchange_strong(unknown, refuses ? 1 : -1)) {
      LOG_DEBUG("rename: plain RENAME %s an existing target on this server", refuses ? "refuses" : "replaces");
    }
  };

  auto do_rename = [this, f, t, done, learn, learned] {
    if (client->features().has(sftp::kExtPosixRename)) {
      if (!learn) return client->rename(f, t, tracked(done));
      return client->rename(f, t, tracked([this, f, t, done, learned](Status s) {
        if (s || !refused_as_existing(s.error())) {
          if (s) learned(false);  // it replaced the target (or another client had removed it: we stay careful)
          return done(std::move(s));
        }
        client->rename(f, t, tracked([done, learned](Status again) {
          if (again) learned(true);
          done(std::move(again));
        }));
      }), /*plain=*/true);
    }
    // Plain RENAME refuses an existing target on most servers: remove a file target first. Not
    // atomic: between the two requests the target name is briefly absent.
    client->rename(f, t, tracked([this, f, t, done, learn, learned](Status s) {
      if (s && learn) learned(false);
      if (s || !is_status(s.error(), sftp::SSH_FX_FAILURE)) return done(std::move(s));
      client->lstat(t, tracked([this, f, t, done, s, learn, learned](Result<sftp::Attrs> a) {
        if (!a || S_ISDIR(a->permissions)) return done(s);
        client->remove(t, tracked([this, f, t, done, learn, learned](Status removed) {
          if (!removed) return done(std::move(removed));
          client->rename(f, t, tracked([done, learn, learned](Status again) {
            if (again && learn) learned(true);
            done(std::move(again));
          }));
        }));
      }));
    }));
  };

  if (flags & RENAME_NOREPLACE) {
    if (plain_rename_refuses.load() == 1) {
      // The server refuses an existing target itself: one request, no race with other clients. Its
      // FAILURE means EEXIST only when an LSTAT shows the target (a name our caches may have
      // thought absent: they forget it).
      return client->rename(f, t, tracked([this, req, t, done](Status s) {
        if (s || !refused_as_existing(s.error())) return done(std::move(s));
        client->lstat(t, tracked([this, req, t, done, s](Result<sftp::Attrs> a) mutable {
          if (!a) return done(std::move(s));
          caches.changed_unknown(t);
          fuse_reply_err(req, EEXIST);
        }));
      }), /*plain=*/true);
    }
    // Check, then rename: another client could create the target between the two requests (until
    // the server is known to refuse an existing target, above).
    return client->lstat(t, tracked([this, req, t, do_rename](Result<sftp::Attrs> a) {
      if (a) return (void)fuse_reply_err(req, EEXIST);
      if (!is_status(a.error(), sftp::SSH_FX_NO_SUCH_FILE)) return reply_error(req, a.error());
      do_rename();
    }));
  }
  do_rename();
}

void Filesystem::Impl::link(fuse_req_t req, Ino ino, Ino newparent, const char* newname) {
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
        // Some servers (rclone) answer OK and do nothing: the new name must exist, else the link
        // failed and the source keeps its count.
        if (!r) {
          caches.changed_unknown(t);
          if (is_status(r.error(), sftp::SSH_FX_NO_SUCH_FILE)) return (void)fuse_reply_err(req, EPERM);
          return reply_error(req, r.error());
        }
        // One more name for the same file: the count we knew, plus one. (LSTAT carries no link count.)
        uint32_t nlink = std::max<uint32_t>(inodes.nlink(ino), 1) + 1;
        inodes.set_nlink(ino, nlink);
        caches.added(t, *r, nlink);
        // One file, one node: the new name is the source's node (same inode number, attributes and
        // link count), as on a local filesystem; a server-side link made elsewhere cannot be seen as one.
        if (!inodes.add_name(ino, newparent, nn)) {
          // The source went away meanwhile: the new name gets a node of its own. The kernel then keeps
          // the source's cached attributes (a different node to it): have it ask again for the new link
          // count. Attributes only (offset < 0): no page cache work, nothing to deadlock.
          if (session) fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
        }
        for (const auto& other : inodes.paths(ino)) {
          if (other != t) caches.changed(other);  // its cached link count is one short
        }
        reply_entry(req, newparent, nn, *r, nlink);
      });
  client->hardlink_on(connection, f, t, tracked(on_linked));
  client->lstat_on(connection, t, tracked(on_stat));
}

}  // namespace sftpfs::fs
