// Early answers (rule 6): attribute changes the application makes on a file this mount created and
// still holds open for writing (tar and cp -p: futimens, fchmod, fchown) are answered before the
// server confirms them. The kernel and the caches show the new values at once; the FSETSTAT goes out
// behind the file's writes, and a failure (or a change the server acknowledged and did not make)
// reaches the application at the next write, flush, fsync or close of that handle, as a failed write
// does. Nothing visible by name to other processes (create, rename, unlink, mkdir) is answered early,
// and a size change never is: it changes data other handles may read.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

std::shared_ptr<FileHandle> Filesystem::Impl::early_change_handle(Ino ino) {
  for (auto& handle : files_of(ino)) {
    if (!handle->created || !handle->writable) continue;
    std::lock_guard lock(handle->mutex);
    // A handle that already failed answers nothing more early: its next call reports that failure.
    if (!handle->released && !handle->first_error) return handle;
  }
  return nullptr;
}

std::shared_ptr<FileHandle> Filesystem::Impl::handle_with_early_changes(Ino ino) {
  for (auto& handle : files_of(ino)) {
    std::lock_guard lock(handle->mutex);
    if (handle->early_changes != 0) return handle;
  }
  return nullptr;
}

bool Filesystem::Impl::answer_setattr_early(fuse_req_t req, Ino ino, const SetattrRequest& r, const sftp::Attrs& sent) {
  if (!opt.cache || r.size) return false;
  auto handle = early_change_handle(ino);
  if (!handle) return false;
  // What the change applies to: the attributes of the create (or of the last early answer) with the
  // size our writes gave it. Their mtime is still the server's only if nothing was written since, or
  // if this change sets the times itself. When it is not (unzip's and install's fchmod after the
  // data), the change is answered all the same, but its reply is not kept: the kernel is told the
  // attributes are already stale and the cache forgets them, so the next stat asks the server,
  // behind the change (a getattr with early changes pending asks through their handle).
  std::optional<sftp::Attrs> base;
  bool mtime_known = false;
  {
    std::lock_guard lock(handle->mutex);
    if (handle->early_base && handle->early_base->has(sftp::SSH_FILEXFER_ATTR_SIZE)) {
      mtime_known = handle->bytes_written == handle->early_base_written || sent.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME);
      base = handle->early_base;
      base->set_size(std::max<uint64_t>(base->size, handle->written_end));
    }
  }
  if (!base) return false;
  const sftp::Attrs now = merge_attrs(*base, sent);
  {
    std::lock_guard lock(handle->mutex);
    handle->early_base = now;
    if (mtime_known) handle->early_base_written = handle->bytes_written;  // else its mtime stays unknown
  }
  const auto path = inodes.path(ino);
  auto reply = [this, req, ino, mtime_known](const sftp::Attrs& attrs) {
    if (mtime_known) return reply_attr(req, ino, attrs);
    reply_attr_uncached(req, ino, attrs);
  };
  if (base == now) {  // rsync's fchmod(0600) of the file it just made with 0600: nothing to send
    reply(now);
    return true;
  }
  {
    std::lock_guard lock(handle->mutex);
    ++handle->early_changes;
  }
  note_local_change(ino);
  node_changed(ino);
  if (path && mtime_known) caches.attrs.put(*path, CachedAttrs{now, 0});

  // The server's answer, and what the file shows right after it (same connection, same round trip):
  // some servers acknowledge a chmod they did not make.
  auto settled = [this, handle, ino, r, sent, path](Status set, Result<sftp::Attrs> read_back) {
    std::optional<Error> failure;
    if (!set) {
      failure = set.error();
    } else if (read_back) {
      if (int err = ignored_change(r, sent, *read_back)) {
        failure = Error::errno_error(err, "the server acknowledged an attribute change and did not make it");
      }
    }
    if (failure) {
      LOG_WARN("an attribute change on %s answered before the server confirmed it failed: %s; reported at the "
               "file's next write, flush, fsync or close",
               path ? path->c_str() : "(unlinked file)", failure->message.c_str());
      // Show what the server has: its attributes when read back, else ask again.
      if (path) {
        if (read_back) {
          caches.attrs.put(*path, CachedAttrs{*read_back, 0});
        } else {
          caches.attrs.invalidate(*path);
        }
      }
      if (session) fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
    }
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard lock(handle->mutex);
      --handle->early_changes;
      if (failure) {
        if (!handle->first_error) handle->first_error = *failure;
        handle->early_base.reset();
      }
      if (handle->drained()) waiters.swap(handle->drained_waiters);
    }
    for (auto& waiter : waiters) waiter();
  };
  const size_t connection = handle->remote->connection;
  // Behind this file's writes on other connections, as a waited change is (attributes.cpp).
  write_order.read(ino, 0, UINT64_MAX, connection, [this, handle, sent, settled] {
    auto [on_set, on_read_back] = joined<Status, Result<sftp::Attrs>>(settled);
    client->fsetstat(handle->remote, sent, tracked(on_set));
    client->fstat(handle->remote, tracked(on_read_back));
  });
  // Only now: the application's next call (a write, another change) must go out behind this one.
  reply(now);
  return true;
}

}  // namespace sftpfs::fs
