// Attributes read back at flush. Writing a file moves its size and mtime on the server, so the
// attributes cached before are forgotten once the writes are answered, and the next stat would cost a
// round trip: rsync's lstat of the file it just closed, make's stat of the object it just wrote.
// The flush has to wait for the writes anyway; an FSTAT sent right behind them, on the handle's own
// connection, is answered in the same round trip. SFTP has a server process requests for one file in
// the order received, so the FSTAT sees every write placed before it; WriteOrder holds it back while
// a write of the file is in flight on another connection. Its answer is cached only if the mount
// changed nothing about the file since it was asked (local_changes), and release then keeps it.
// A stat of a file being written (git's fstat between write and close) is asked the same way, through
// the writing handle, and counts as its read-back: the close then has nothing to ask. A flush whose
// writes were all answered already does not wait for its read-back (it would have replied at once
// without one); the answer is kept when it comes.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

// One FSTAT's answer, and whoever waits for it: it may come before or after the writes drain.
struct Filesystem::Impl::ReadBack {
  uint64_t asked_at_change = 0;  // the inode's local change number when it was asked
  uint64_t written = 0;          // the handle's bytes_written then
  std::mutex mutex;
  std::optional<Result<sftp::Attrs>> answer;
  std::function<void(Result<sftp::Attrs>)> waiter;
};

std::shared_ptr<Filesystem::Impl::ReadBack> Filesystem::Impl::read_back_at_flush(const std::shared_ptr<FileHandle>& h) {
  {
    std::lock_guard lock(h->mutex);
    if (h->bytes_written == h->read_back_written) return nullptr;  // nothing written since the last one
  }
  return start_read_back(h);
}

std::shared_ptr<Filesystem::Impl::ReadBack> Filesystem::Impl::start_read_back(const std::shared_ptr<FileHandle>& h) {
  if (!opt.cache) return nullptr;  // nothing would keep the answer
  auto rb = std::make_shared<ReadBack>();
  {
    std::lock_guard lock(h->mutex);
    // Writes spread over other connections: the FSTAT would wait for them, a round trip more.
    if (h->write_stripes_requested) return nullptr;
    rb->written = h->bytes_written;
  }
  rb->asked_at_change = local_change_of(h->ino);
  write_order.read(h->ino, 0, UINT64_MAX, h->remote->lane, [this, h, rb] {
    client->fstat(h->remote, tracked([rb](Result<sftp::Attrs> a) {
      std::function<void(Result<sftp::Attrs>)> waiter;
      {
        std::lock_guard lock(rb->mutex);
        if (!rb->waiter) {
          rb->answer = std::move(a);
          return;
        }
        waiter.swap(rb->waiter);
      }
      waiter(std::move(a));
    }));
  });
  return rb;
}

std::shared_ptr<FileHandle> Filesystem::Impl::handle_to_read_back(Ino ino) {
  for (auto& h : files_of(ino)) {
    if (!h->writable) continue;
    std::lock_guard lock(h->mutex);
    if (!h->released && h->bytes_written != h->read_back_written) return h;
  }
  return nullptr;
}

void Filesystem::Impl::when_read_back(const std::shared_ptr<ReadBack>& rb, std::function<void(Result<sftp::Attrs>)> fn) {
  std::optional<Result<sftp::Attrs>> answer;
  {
    std::lock_guard lock(rb->mutex);
    if (!rb->answer) {
      rb->waiter = std::move(fn);
      return;
    }
    answer.swap(rb->answer);
  }
  fn(std::move(*answer));
}

void Filesystem::Impl::keep_read_back(const std::shared_ptr<FileHandle>& h, const ReadBack& rb, const sftp::Attrs& attrs) {
  if (!attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE) || !attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME) ||
      !attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) || !S_ISREG(attrs.permissions))
    return;
  {
    std::lock_guard lock(floors_mutex);
    auto change = local_changes.find(h->ino);
    if (change == local_changes.end() || change->second != rb.asked_at_change) return;  // changed since
    auto floor = floors.find(h->ino);
    if (floor != floors.end()) {
      if (floor->second.pending != 0 || attrs.size < floor->second.size) return;
      floors.erase(floor);  // the server's size includes every write: nothing left to hold up
    }
  }
  {
    std::lock_guard lock(h->mutex);
    // An early change not yet confirmed may still be refused and its values undone: keep nothing.
    if (h->early_changes != 0) return;
    h->read_back_seq = rb.asked_at_change;
    h->read_back_written = rb.written;
    if (h->created) {
      h->early_base = attrs;  // later early answers on this handle build on the server's state
      h->early_base_written = rb.written;
    }
  }
  note_file_attrs(h->ino, attrs);
  for (const auto& path : inodes.paths(h->ino)) caches.attrs.put(path, CachedAttrs{attrs, 0});
}

bool Filesystem::Impl::read_back_current(const std::shared_ptr<FileHandle>& h) {
  uint64_t seq;
  {
    std::lock_guard lock(h->mutex);
    seq = h->read_back_seq;
  }
  return seq != 0 && local_change_of(h->ino) == seq;
}

}  // namespace sftpfs::fs
