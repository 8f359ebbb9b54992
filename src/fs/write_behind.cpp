// Writes: acknowledged before the server answers (write-behind, bounded per handle), spread over
// connections for long streams, with size floors while they are in flight; waiting for them to drain.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

void Filesystem::Impl::floor_write_sent(Ino ino, uint64_t end, uint64_t bytes) {
  std::lock_guard lock(floors_mutex);
  auto& f = floors[ino];
  f.size = std::max(f.size, end);
  f.pending += bytes;
  f.done_at = 0;
  local_changes[ino] = ++last_local_change;
}

void Filesystem::Impl::note_local_change(Ino ino) {
  std::lock_guard lock(floors_mutex);
  local_changes[ino] = ++last_local_change;
}

uint64_t Filesystem::Impl::local_change_of(Ino ino) {
  std::lock_guard lock(floors_mutex);
  auto it = local_changes.find(ino);
  return it == local_changes.end() ? 0 : it->second;
}

void Filesystem::Impl::floor_write_done(Ino ino, uint64_t bytes) {
  {
    std::lock_guard lock(floors_mutex);
    auto it = floors.find(ino);
    if (it == floors.end()) return;
    it->second.pending -= std::min(it->second.pending, bytes);
    if (it->second.pending != 0) return;
    // Kept until attributes asked for after this moment arrive (floor_confirmed): a stat that was
    // on its way meanwhile (possibly on another connection, answered before these writes were
    // applied) must not show the size from before them.
    it->second.done_at = write_epoch.fetch_add(1) + 1;
  }
  // Attributes fetched while the writes were in flight are older than the file now is.
  node_changed(ino);
}

void Filesystem::Impl::floor_truncate(Ino ino, uint64_t size) {
  std::lock_guard lock(floors_mutex);
  auto it = floors.find(ino);
  if (it == floors.end()) return;
  if (it->second.pending == 0) {
    floors.erase(it);  // the truncation is the newest size, and the server has it
  } else {
    it->second.size = size;
  }
}

void Filesystem::Impl::truncated_through_mount(Ino ino, uint64_t size) {
  note_local_change(ino);
  // A handle's writes past `size` are gone by our own doing: its check at flush must not count them.
  for (auto& h : files_of(ino)) {
    std::lock_guard lock(h->mutex);
    h->written_end = std::min(h->written_end, size);
    h->early_base.reset();  // its size no longer follows from the writes
  }
}

std::optional<uint64_t> Filesystem::Impl::floor_of(Ino ino) {
  std::lock_guard lock(floors_mutex);
  auto it = floors.find(ino);
  if (it == floors.end()) return std::nullopt;
  return it->second.size;
}

bool Filesystem::Impl::writes_in_flight(Ino ino) {
  std::lock_guard lock(floors_mutex);
  auto it = floors.find(ino);
  return it != floors.end() && it->second.pending != 0;
}

bool Filesystem::Impl::floor_confirmed(Ino ino, uint64_t asked_at) {
  std::lock_guard lock(floors_mutex);
  auto it = floors.find(ino);
  if (it == floors.end()) return true;
  if (it->second.pending != 0 || it->second.done_at == 0 || it->second.done_at > asked_at) return false;
  floors.erase(it);
  return true;
}

void Filesystem::Impl::data_changed(Ino ino) {
  small_files->drop(ino);  // and what was read ahead of it before it was opened
  for (auto& h : files_of(ino)) {
    h->size_hint.store(FileHandle::kUnknownSize);
    if (h->prefetcher) h->prefetcher->invalidate();
  }
}

void Filesystem::Impl::when_inode_drained(Ino ino, std::function<void()> fn) {
  auto files = files_of(ino);
  auto remaining = std::make_shared<std::atomic<size_t>>(files.size() + 1);
  auto shared_fn = std::make_shared<std::function<void()>>(std::move(fn));
  auto one_done = [remaining, shared_fn] {
    if (remaining->fetch_sub(1) == 1) (*shared_fn)();
  };
  for (auto& f : files) when_drained(f, one_done);
  one_done();
}

void Filesystem::Impl::when_drained(const std::shared_ptr<FileHandle>& h, std::function<void()> fn) {
  {
    std::lock_guard lock(h->mutex);
    if (!h->drained()) {
      h->drained_waiters.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

std::optional<Error> Filesystem::Impl::take_write_error(const std::shared_ptr<FileHandle>& h) {
  std::lock_guard lock(h->mutex);
  auto e = std::move(h->first_error);
  h->first_error.reset();
  return e;
}

void Filesystem::Impl::maybe_open_write_stripes(const std::shared_ptr<FileHandle>& h) {
  // Called for every write: the handle's own state first, the client's (two locks, a lookup) after.
  if (h->append) return;
  {
    std::lock_guard lock(h->mutex);
    if (h->write_stripes_requested || h->released || h->bytes_written < kWriteStripeAfter) return;
  }
  // Every lane (connection x SFTP channel) has its own flow-control window: OpenSSH grants each
  // channel 2 MiB, so one lane carries at most 2 MiB per round trip. That limits a writer only when
  // the round trip is long (2 MiB / 5 ms = 400 MB/s, more than one connection's crypto does); below
  // that, extra channels only add CPU per byte (measured at 0 ms: 4.4 -> 6.8 CPU-s/GiB, slower).
  // The shortest round trip seen: on a busy machine the smoothed one includes queueing at the server,
  // which more channels would only add to.
  const bool windows_limit = client->min_rtt(h->remote->connection) >= kChannelWindowMattersRtt;
  const size_t lanes = windows_limit ? client->lane_count() : client->connection_count();
  if (lanes < 2) return;
  // Several handles writing one file must write it in place. A server offering fsync@openssh.com
  // holds a file descriptor per handle; rclone (no fsync) uploads each handle's writes apart: through
  // a second handle it fails or drops writes at offsets, and its FSTAT still shows the file's size,
  // so only this rule keeps its files whole.
  if (!client->features().has(sftp::kExtFsync)) return;
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
  for (size_t i = 1; i < lanes; ++i) {
    size_t lane = (h->remote->lane + i) % lanes;
    // WRITE only: no CREAT/TRUNC/EXCL/APPEND, the file exists and must not change by opening it.
    client->open_on(lane, *path, sftp::SSH_FXF_WRITE, sftp::Attrs{},
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
                          // Part of a stream this mount is writing, like the first handle: a reconnect
                          // before its first write must not call the file "changed by someone else"
                          // because the other lanes' writes moved its size (RemoteFile's reopen check).
                          (*r)->note_write();
                          h->write_stripes.push_back(*r);
                          keep = true;
                        }
                      }
                      if (!keep) close_quietly(*r);
                    }));
  }
}

client::FileRef Filesystem::Impl::write_target(const std::shared_ptr<FileHandle>& h, size_t lane) {
  std::lock_guard lock(h->mutex);
  for (auto& s : h->write_stripes)
    if (s->lane == lane) return s;
  return h->remote;
}

void Filesystem::Impl::write(fuse_req_t req, Ino, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
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
  std::vector<size_t> usable{handle->remote->lane};
  {
    std::lock_guard lock(handle->mutex);
    if (handle->append) {
      offset = handle->append_offset;
      handle->append_offset += size;
    }
    handle->bytes_written += size;
    handle->written_end = std::max<uint64_t>(handle->written_end, offset + size);
    for (auto& s : handle->write_stripes) usable.push_back(s->lane);
    handle->in_flight += size;
    // Within the handle's bound and the mount's: many writers together hold no more than the budget.
    uint64_t mount_in_flight = write_behind_used.fetch_add(size) + size;
    ack_now = handle->in_flight <= kWriteBehindBytes * usable.size() && mount_in_flight <= opt.write_behind_budget;
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
      write_behind_used.fetch_sub(size);
      if (!s) {
        mine = s.error();
        if (!handle->first_error) handle->first_error = s.error();
      }
      if (handle->drained()) waiters.swap(handle->drained_waiters);
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
                    [this, handle, offset, data = std::move(data), on_reply](size_t lane,
                                                                            WriteOrder::Token token) mutable {
                      client->write(write_target(handle, lane), offset, std::move(data),
                                    [on_reply, token](Status s) mutable { on_reply(std::make_pair(token, std::move(s))); });
                    });
  if (ack_now) fuse_reply_write(req, size);
}

}  // namespace sftpfs::fs
