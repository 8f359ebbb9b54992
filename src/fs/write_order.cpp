#include "fs/write_order.hpp"

#include <algorithm>
#include <utility>

namespace sftpfs::fs {

namespace {
bool overlaps(uint64_t a_begin, uint64_t a_end, uint64_t b_begin, uint64_t b_end) {
  return a_begin < b_end && b_begin < a_end;
}
}  // namespace

bool WriteOrder::place(const InodeState& state, size_t ahead, uint64_t begin, uint64_t end,
                       const std::vector<size_t>& usable, size_t preferred, size_t* connection) {
  // Something overlapping waits ahead of this request: it goes first.
  for (size_t i = 0; i < ahead && i < state.waiting.size(); ++i) {
    if (overlaps(state.waiting[i].begin, state.waiting[i].end, begin, end)) return false;
  }
  bool found = false;
  size_t only = 0;
  for (const auto& [token, range] : state.in_flight) {
    if (!overlaps(range.begin, range.end, begin, end)) continue;
    if (found && range.connection != only) return false;  // overlaps on two connections: wait
    found = true;
    only = range.connection;
  }
  if (!found) {
    *connection = preferred;
    return true;
  }
  if (std::find(usable.begin(), usable.end(), only) == usable.end()) return false;
  *connection = only;  // behind the overlapping writes, on their connection
  return true;
}

void WriteOrder::start_locked(Ino ino, InodeState& state, Waiter&& w, size_t connection) {
  if (!w.is_write) {
    ready_.push_back(std::move(w.send_read));
    return;
  }
  Token token = next_token_++;
  state.in_flight.emplace(token, Range{w.begin, w.end, connection});
  (void)ino;
  ready_.push_back([send = std::move(w.send_write), connection, token] { send(connection, token); });
}

void WriteOrder::write(Ino ino, uint64_t begin, uint64_t end, std::vector<size_t> usable, size_t preferred,
                       SendWrite send) {
  std::unique_lock lock(mutex_);
  auto& state = inodes_[ino];
  Waiter w{true, begin, end, std::move(usable), preferred, std::move(send), {}};
  size_t connection = 0;
  if (place(state, state.waiting.size(), begin, end, w.usable, preferred, &connection)) {
    start_locked(ino, state, std::move(w), connection);
  } else {
    state.waiting.push_back(std::move(w));
  }
  drain(lock);
}

void WriteOrder::read(Ino ino, uint64_t begin, uint64_t end, size_t connection, SendRead send) {
  std::unique_lock lock(mutex_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) {
    lock.unlock();
    return send();  // nothing written to this file is in flight: the common case
  }
  auto& state = it->second;
  Waiter w{false, begin, end, {connection}, connection, {}, std::move(send)};
  size_t chosen = 0;
  if (!place(state, state.waiting.size(), begin, end, w.usable, connection, &chosen)) {
    state.waiting.push_back(std::move(w));
    return;
  }
  // Behind writes queued for sending on its connection (or independent of them): keep the order.
  start_locked(ino, state, std::move(w), chosen);
  drain(lock);
}

void WriteOrder::complete(Ino ino, Token token) {
  std::unique_lock lock(mutex_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  auto& state = it->second;
  state.in_flight.erase(token);
  // Start every waiter that can go now, in order; one still waiting holds back those that overlap it.
  for (size_t i = 0; i < state.waiting.size();) {
    size_t connection = 0;
    Waiter& w = state.waiting[i];
    if (place(state, i, w.begin, w.end, w.usable, w.preferred, &connection)) {
      Waiter taken = std::move(w);
      state.waiting.erase(state.waiting.begin() + static_cast<std::ptrdiff_t>(i));
      start_locked(ino, state, std::move(taken), connection);
    } else {
      ++i;
    }
  }
  if (state.in_flight.empty() && state.waiting.empty()) inodes_.erase(it);
  drain(lock);
}

void WriteOrder::drain(std::unique_lock<std::mutex>& lock) {
  if (draining_) return;  // that thread sends ours too, after what was placed before it
  draining_ = true;
  while (!ready_.empty()) {
    auto send = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    send();  // may call complete() (a dead connection answers at once): it only queues
    lock.lock();
  }
  draining_ = false;
}

size_t WriteOrder::writes_in_flight(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? 0 : it->second.in_flight.size();
}

size_t WriteOrder::waiting(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? 0 : it->second.waiting.size();
}

}  // namespace sftpfs::fs
