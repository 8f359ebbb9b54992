#include "fs/prefetcher.hpp"

#include <algorithm>

namespace sftpfs::fs {

bool PrefetchBudget::try_reserve(uint64_t bytes) {
  uint64_t used = used_.load();
  do {
    if (used + bytes > limit_) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes));
  return true;
}

void PrefetchBudget::release(uint64_t bytes) { used_.fetch_sub(bytes); }

// One fetch: its range, then its bytes. The budget reservation is returned when the last reference
// (the prefetcher's list, a fetch in flight, a served slice) goes.
struct Prefetcher::Segment {
  Segment(uint64_t o, uint32_t l, std::shared_ptr<PrefetchBudget> b) : offset(o), length(l), budget(std::move(b)) {}
  ~Segment() { budget->release(length); }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  const uint64_t offset;
  const uint32_t length;
  const std::shared_ptr<PrefetchBudget> budget;
  bool done = false;
  std::shared_ptr<const sftp::Bytes> data;  // set when done; shorter than length = end of file

  uint64_t end() const { return offset + length; }
};

std::shared_ptr<Prefetcher> Prefetcher::create(PrefetchConfig config, std::shared_ptr<PrefetchBudget> budget,
                                               Fetch fetch) {
  return std::make_shared<Prefetcher>(config, std::move(budget), std::move(fetch));
}

uint64_t window_for_rtt(std::chrono::microseconds shortest_rtt, uint64_t configured) {
  constexpr uint64_t kBytesPerSecond = 400'000'000;
  constexpr uint64_t kFloor = 4u << 20;
  if (shortest_rtt.count() <= 0) return configured;
  const uint64_t needed = kBytesPerSecond / 1'000'000 * static_cast<uint64_t>(shortest_rtt.count());
  return std::min(configured, std::max(needed, kFloor));
}

Prefetcher::Prefetcher(PrefetchConfig config, std::shared_ptr<PrefetchBudget> budget, Fetch fetch)
    : config_(config), budget_(std::move(budget)), fetch_(std::move(fetch)), window_(config.initial_window) {}

Prefetcher::~Prefetcher() = default;

uint64_t Prefetcher::window() const {
  std::lock_guard lock(mutex_);
  return window_;
}

uint64_t Prefetcher::buffered() const {
  std::lock_guard lock(mutex_);
  uint64_t total = 0;
  for (const auto& s : segments_) total += s->length;
  return total;
}

size_t Prefetcher::segments() const {
  std::lock_guard lock(mutex_);
  return segments_.size();
}

void Prefetcher::run(std::vector<Ready>& ready) {
  for (auto& r : ready) r.deliver(std::move(r.slices));
  ready.clear();
}

void Prefetcher::drop_all_locked(std::vector<Ready>& ready) {
  segments_.clear();  // fetches in flight find their segment gone and discard their bytes
  for (auto& w : waiting_) ready.push_back(Ready{std::move(w.deliver), std::nullopt});
  waiting_.clear();
  eof_.reset();
  window_ = config_.initial_window;
}

// Issues segments until the stream is fetched up to `up_to` or the window ahead of the reader is full.
// false when `up_to` could not be covered (no budget).
bool Prefetcher::issue_locked(uint64_t up_to, std::vector<SegmentPtr>& to_fetch) {
  uint64_t target = std::max(up_to, consumed_ + window_);
  while (next_fetch_ < target) {
    if (eof_ && next_fetch_ >= *eof_) break;
    uint32_t length = static_cast<uint32_t>(std::min<uint64_t>(config_.segment_size, window_));
    if (!budget_->try_reserve(length)) return next_fetch_ >= up_to;
    auto segment = std::make_shared<Segment>(next_fetch_, length, budget_);
    segments_.push_back(segment);
    to_fetch.push_back(std::move(segment));
    next_fetch_ += length;
  }
  return true;
}

// Slices for [offset, offset+size) when every segment it needs has arrived; `pending` says whether it
// must wait (else nullopt means the range is not held here).
std::optional<Prefetcher::Slices> Prefetcher::try_serve_locked(uint64_t offset, uint32_t size, bool& pending) {
  pending = false;
  Slices out;
  uint64_t position = offset;
  const uint64_t end = offset + size;
  for (const auto& s : segments_) {
    if (position >= end) break;
    if (s->end() <= position) continue;
    if (s->offset > position) return std::nullopt;  // a hole: not ours
    if (!s->done) {
      pending = true;
      return std::nullopt;
    }
    uint64_t available_end = s->offset + s->data->size();
    if (available_end > position) {
      uint64_t take_end = std::min(end, available_end);
      out.iov.push_back(iovec{const_cast<uint8_t*>(s->data->data()) + (position - s->offset),
                              static_cast<size_t>(take_end - position)});
      out.keep.push_back(s->data);
      out.size += take_end - position;
      position = take_end;
    }
    if (s->data->size() < s->length) return out;  // end of file inside this segment
  }
  if (position < end) return std::nullopt;
  return out;
}

void Prefetcher::serve_waiting_locked(std::vector<Ready>& ready) {
  uint64_t served_end = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    bool pending = false;
    auto slices = try_serve_locked(it->offset, it->size, pending);
    if (pending) {
      ++it;
      continue;
    }
    served_end = std::max(served_end, it->offset + it->size);
    ready.push_back(Ready{std::move(it->deliver), std::move(slices)});  // nullopt: read directly
    it = waiting_.erase(it);
  }
  // Segments the reader has gone past are done with; each one consumed doubles the window.
  while (!segments_.empty() && segments_.front()->done && segments_.front()->end() <= served_end) {
    segments_.pop_front();
    window_ = std::min(config_.max_window, window_ * 2);
  }
}

bool Prefetcher::read(uint64_t offset, uint32_t size, Deliver deliver) {
  std::vector<Ready> ready;
  std::vector<SegmentPtr> to_fetch;
  bool taken = false;
  {
    std::lock_guard lock(mutex_);
    const uint64_t end = offset + size;
    const bool held = !segments_.empty() && offset >= segments_.front()->offset && offset < next_fetch_;
    const bool continues = any_read_ && offset == last_end_;
    const bool starts_file = !any_read_ && offset == 0;
    // Kernel reads run concurrently and can arrive a little out of order: one just behind what was
    // already consumed is read directly without disturbing the stream.
    const bool just_behind = !segments_.empty() && offset < segments_.front()->offset &&
                             offset + window_ >= segments_.front()->offset;
    last_end_ = std::max(end, just_behind ? last_end_ : end);
    any_read_ = true;
    if (just_behind) return false;
    if (!held && !continues && !starts_file) {
      // Random access: no stream, and nothing kept that a random reader would not use.
      drop_all_locked(ready);
    } else if (eof_ && offset >= *eof_) {
      // At or past an end of file seen earlier: the file may have grown since; ask the server.
      drop_all_locked(ready);
    } else {
      if (!held && offset != next_fetch_) {
        drop_all_locked(ready);  // a new stream starts here
      }
      if (segments_.empty()) {
        next_fetch_ = offset;
        consumed_ = offset;
      }
      consumed_ = std::max(consumed_, end);
      if (issue_locked(end, to_fetch)) {
        waiting_.push_back(Waiting{offset, size, std::move(deliver)});
        serve_waiting_locked(ready);
        taken = true;
      }
    }
  }
  start(to_fetch);
  run(ready);
  return taken;
}

void Prefetcher::invalidate() {
  std::vector<Ready> ready;
  {
    std::lock_guard lock(mutex_);
    drop_all_locked(ready);
    any_read_ = false;
  }
  run(ready);
}

void Prefetcher::preload(std::shared_ptr<const sftp::Bytes> data, uint64_t reserved) {
  // One finished segment one byte longer than the file: shorter data than the segment's length is how
  // a segment says "the file ends here", so a read at the end needs no request.
  auto segment = std::make_shared<Segment>(0, static_cast<uint32_t>(reserved), budget_);
  segment->data = std::move(data);
  segment->done = true;
  std::lock_guard lock(mutex_);
  segments_.clear();
  waiting_.clear();
  segments_.push_back(segment);
  next_fetch_ = segment->end();
  consumed_ = 0;
  last_end_ = 0;
  any_read_ = false;
  eof_ = segment->data->size();
}

void Prefetcher::start(std::vector<SegmentPtr>& to_fetch) {
  for (auto& segment : to_fetch) {
    auto self = shared_from_this();
    fetch_(segment->offset, segment->length,
           [self, segment](Result<sftp::Bytes> r) { self->on_fetched(segment, std::move(r)); });
  }
  to_fetch.clear();
}

void Prefetcher::on_fetched(const SegmentPtr& segment, Result<sftp::Bytes> result) {
  std::vector<Ready> ready;
  {
    std::lock_guard lock(mutex_);
    bool current = std::find(segments_.begin(), segments_.end(), segment) != segments_.end();
    if (!current) return;  // invalidated meanwhile: these bytes may be stale
    if (!result || result->size() > segment->length) {
      // A failed fetch: drop the stream; waiting reads go to the server themselves and get the
      // error (or the data) first hand.
      drop_all_locked(ready);
    } else {
      if (result->size() < segment->length) {
        uint64_t eof = segment->offset + result->size();
        eof_ = eof_ ? std::min(*eof_, eof) : eof;
      }
      segment->data = std::make_shared<const sftp::Bytes>(std::move(*result));
      segment->done = true;
      serve_waiting_locked(ready);
    }
  }
  run(ready);
}

}  // namespace sftpfs::fs
