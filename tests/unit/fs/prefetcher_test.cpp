#include "fs/prefetcher.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <numeric>

namespace sftpfs::fs {
namespace {

// A file in memory behind the fetch function. Fetches wait in a queue until the test completes them,
// so the test decides what is in flight.
struct FakeFile {
  sftp::Bytes content;
  struct Call {
    uint64_t offset;
    uint32_t length;
    Prefetcher::FetchDone done;
  };
  std::deque<Call> calls;
  uint64_t fetched_bytes = 0;

  explicit FakeFile(size_t size) : content(size) {
    for (size_t i = 0; i < size; ++i) content[i] = static_cast<uint8_t>((i * 7 + i / 251) & 0xff);
  }

  Prefetcher::Fetch fetch() {
    return [this](uint64_t offset, uint32_t length, Prefetcher::FetchDone done) {
      calls.push_back(Call{offset, length, std::move(done)});
    };
  }

  // Completes the oldest fetch as a server would: short only at end of file.
  bool complete_one() {
    if (calls.empty()) return false;
    auto call = std::move(calls.front());
    calls.pop_front();
    uint64_t begin = std::min<uint64_t>(call.offset, content.size());
    uint64_t end = std::min<uint64_t>(call.offset + call.length, content.size());
    fetched_bytes += end - begin;
    call.done(sftp::Bytes(content.begin() + static_cast<ptrdiff_t>(begin), content.begin() + static_cast<ptrdiff_t>(end)));
    return true;
  }
  void complete_all() {
    while (complete_one()) {
    }
  }
  void fail_one() {
    auto call = std::move(calls.front());
    calls.pop_front();
    call.done(Error::protocol_error("link down"));
  }
};

struct Outcome {
  bool delivered = false;
  std::optional<sftp::Bytes> bytes;  // nullopt: handed back (read directly)
};

Prefetcher::Deliver collect(Outcome& out) {
  return [&out](std::optional<Prefetcher::Slices> slices) {
    EXPECT_FALSE(out.delivered) << "delivered twice";
    out.delivered = true;
    if (!slices) return;
    sftp::Bytes b;
    for (const auto& v : slices->iov) {
      auto* p = static_cast<const uint8_t*>(v.iov_base);
      b.insert(b.end(), p, p + v.iov_len);
    }
    EXPECT_EQ(b.size(), slices->size);
    out.bytes = std::move(b);
  };
}

sftp::Bytes expected(const FakeFile& f, uint64_t offset, uint64_t size) {
  uint64_t begin = std::min<uint64_t>(offset, f.content.size());
  uint64_t end = std::min<uint64_t>(offset + size, f.content.size());
  return sftp::Bytes(f.content.begin() + static_cast<ptrdiff_t>(begin), f.content.begin() + static_cast<ptrdiff_t>(end));
}

PrefetchConfig small_config() {
  PrefetchConfig c;
  c.initial_window = 64 << 10;
  c.max_window = 1 << 20;
  c.segment_size = 128 << 10;
  return c;
}

TEST(Prefetcher, SequentialReadsAreExactAndTheWindowGrowsToItsCap) {
  FakeFile file(8 << 20);
  auto budget = std::make_shared<PrefetchBudget>(64 << 20);
  auto p = Prefetcher::create(small_config(), budget, file.fetch());
  const uint32_t chunk = 32 << 10;
  uint64_t max_buffered = 0;
  for (uint64_t off = 0; off < file.content.size(); off += chunk) {
    Outcome out;
    ASSERT_TRUE(p->read(off, chunk, collect(out))) << off;
    // The reader waits for the network: complete fetches until this read is answered.
    while (!out.delivered) ASSERT_TRUE(file.complete_one());
    ASSERT_TRUE(out.bytes);
    ASSERT_EQ(*out.bytes, expected(file, off, chunk)) << off;
    max_buffered = std::max(max_buffered, p->buffered());
  }
  EXPECT_EQ(p->window(), 1u << 20);
  // Bounded by the window plus one segment of overshoot, and by the budget.
  EXPECT_LE(max_buffered, (1u << 20) + (128u << 10));
  EXPECT_LE(budget->used(), budget->limit());
  // Every byte was fetched once (plus what the window ran ahead past the last read).
  EXPECT_LE(file.fetched_bytes, file.content.size());
}

TEST(Prefetcher, KeepsReadsInFlightAheadOfTheReader) {
  FakeFile file(64 << 20);
  auto p = Prefetcher::create(small_config(), std::make_shared<PrefetchBudget>(64 << 20), file.fetch());
  Outcome first;
  ASSERT_TRUE(p->read(0, 4096, collect(first)));
  EXPECT_FALSE(first.delivered);
  // The initial window is requested at once, not just the 4 KiB asked for.
  uint64_t requested = 0;
  for (const auto& c : file.calls) requested += c.length;
  EXPECT_GE(requested, 64u << 10);
  file.complete_all();
  ASSERT_TRUE(first.delivered);
}

TEST(Prefetcher, EndOfFileIsExact) {
  const size_t size = (300 << 10) + 123;  // not a multiple of anything
  FakeFile file(size);
  auto p = Prefetcher::create(small_config(), std::make_shared<PrefetchBudget>(64 << 20), file.fetch());
  const uint32_t chunk = 100 << 10;
  uint64_t total = 0;
  for (uint64_t off = 0;; off += chunk) {
    Outcome out;
    if (!p->read(off, chunk, collect(out))) {
      // At the end of file seen earlier: read directly (the file may have grown).
      EXPECT_GE(off, size);
      break;
    }
    file.complete_all();
    ASSERT_TRUE(out.delivered && out.bytes);
    ASSERT_EQ(*out.bytes, expected(file, off, chunk));
    total += out.bytes->size();
    if (out.bytes->size() < chunk) break;
  }
  EXPECT_EQ(total, size);
}

TEST(Prefetcher, RandomAccessIsNotPrefetchedAndDropsTheStream) {
  FakeFile file(16 << 20);
  auto budget = std::make_shared<PrefetchBudget>(64 << 20);
  auto p = Prefetcher::create(small_config(), budget, file.fetch());
  Outcome a;
  ASSERT_TRUE(p->read(0, 4096, collect(a)));
  file.complete_all();
  EXPECT_GT(p->buffered(), 0u);
  Outcome b;
  EXPECT_FALSE(p->read(10 << 20, 4096, collect(b)));  // a seek far away
  EXPECT_FALSE(b.delivered);
  EXPECT_EQ(p->buffered(), 0u);
  EXPECT_EQ(budget->used(), 0u);
  Outcome c;
  EXPECT_FALSE(p->read(3 << 20, 4096, collect(c)));  // random again
  EXPECT_TRUE(file.calls.empty());
  // Reading on from where the last read ended is sequential again: a new stream, small window.
  Outcome d;
  ASSERT_TRUE(p->read((3 << 20) + 4096, 4096, collect(d)));
  EXPECT_EQ(p->window(), 64u << 10);
  file.complete_all();
  ASSERT_TRUE(d.bytes);
  EXPECT_EQ(*d.bytes, expected(file, (3 << 20) + 4096, 4096));
}

TEST(Prefetcher, InvalidateDiscardsFetchesInFlight) {
  FakeFile file(4 << 20);
  auto budget = std::make_shared<PrefetchBudget>(64 << 20);
  auto p = Prefetcher::create(small_config(), budget, file.fetch());
  Outcome out;
  ASSERT_TRUE(p->read(0, 4096, collect(out)));
  ASSERT_FALSE(file.calls.empty());
  p->invalidate();  // e.g. a write to the file
  ASSERT_TRUE(out.delivered);
  EXPECT_FALSE(out.bytes);  // handed back: the caller reads the new bytes itself
  // The old fetches complete later with (possibly stale) bytes: nothing is kept or served.
  file.content.assign(file.content.size(), 0xAB);
  file.complete_all();
  EXPECT_EQ(p->buffered(), 0u);
  EXPECT_EQ(budget->used(), 0u);
  Outcome again;
  ASSERT_TRUE(p->read(0, 4096, collect(again)));
  file.complete_all();
  ASSERT_TRUE(again.bytes);
  EXPECT_EQ(*again.bytes, sftp::Bytes(4096, 0xAB));
}

TEST(Prefetcher, APreloadedWholeFileIsServedWithoutFetchesAndGivesItsBudgetBack) {
  FakeFile file(5000);
  auto budget = std::make_shared<PrefetchBudget>(64 << 20);
  auto p = Prefetcher::create(small_config(), budget, file.fetch());
  ASSERT_TRUE(budget->try_reserve(5001));  // what the read-ahead reserved for it
  p->preload(std::make_shared<const sftp::Bytes>(file.content), 5001);
  Outcome a, b;
  ASSERT_TRUE(p->read(0, 4096, collect(a)));
  ASSERT_TRUE(p->read(4096, 4096, collect(b)));  // crosses the end: short, no request
  EXPECT_TRUE(file.calls.empty());
  ASSERT_TRUE(a.bytes && b.bytes);
  EXPECT_EQ(*a.bytes, expected(file, 0, 4096));
  EXPECT_EQ(*b.bytes, expected(file, 4096, 4096));
  EXPECT_EQ(budget->used(), 0u);  // consumed past its end: given back
  // A preload dropped unread (a write through the mount) gives its budget back too.
  ASSERT_TRUE(budget->try_reserve(5001));
  auto q = Prefetcher::create(small_config(), budget, file.fetch());
  q->preload(std::make_shared<const sftp::Bytes>(file.content), 5001);
  q->invalidate();
  EXPECT_EQ(budget->used(), 0u);
}

TEST(Prefetcher, AFailedFetchHandsWaitingReadsBack) {
  FakeFile file(4 << 20);
  auto budget = std::make_shared<PrefetchBudget>(64 << 20);
  auto p = Prefetcher::create(small_config(), budget, file.fetch());
  Outcome out;
  ASSERT_TRUE(p->read(0, 4096, collect(out)));
  file.fail_one();
  ASSERT_TRUE(out.delivered);
  EXPECT_FALSE(out.bytes);
  file.complete_all();
  EXPECT_EQ(budget->used(), 0u);
}

TEST(Prefetcher, OutOfOrderReadsAreServed) {
  FakeFile file(4 << 20);
  auto p = Prefetcher::create(small_config(), std::make_shared<PrefetchBudget>(64 << 20), file.fetch());
  Outcome a, b, c;
  ASSERT_TRUE(p->read(0, 32 << 10, collect(a)));
  // The kernel's next two reads arrive swapped: both inside what is being fetched.
  ASSERT_TRUE(p->read(64 << 10, 32 << 10, collect(c)));
  ASSERT_TRUE(p->read(32 << 10, 32 << 10, collect(b)));
  file.complete_all();
  ASSERT_TRUE(a.bytes && b.bytes && c.bytes);
  EXPECT_EQ(*a.bytes, expected(file, 0, 32 << 10));
  EXPECT_EQ(*b.bytes, expected(file, 32 << 10, 32 << 10));
  EXPECT_EQ(*c.bytes, expected(file, 64 << 10, 32 << 10));
}

TEST(Prefetcher, TheBudgetBoundsEveryFileTogether) {
  FakeFile one(16 << 20), two(16 << 20);
  auto budget = std::make_shared<PrefetchBudget>(512 << 10);
  auto p1 = Prefetcher::create(small_config(), budget, one.fetch());
  auto p2 = Prefetcher::create(small_config(), budget, two.fetch());
  for (uint64_t off = 0; off < (4 << 20); off += 64 << 10) {
    Outcome a, b;
    bool ta = p1->read(off, 64 << 10, collect(a));
    bool tb = p2->read(off, 64 << 10, collect(b));
    EXPECT_LE(budget->used(), budget->limit());
    one.complete_all();
    two.complete_all();
    if (ta) {
      ASSERT_TRUE(a.bytes);
      EXPECT_EQ(*a.bytes, expected(one, off, 64 << 10));
    }
    if (tb) {
      ASSERT_TRUE(b.bytes);
      EXPECT_EQ(*b.bytes, expected(two, off, 64 << 10));
    }
  }
  p1.reset();
  p2.reset();
  EXPECT_EQ(budget->used(), 0u);
}

TEST(Prefetcher, TheWindowCapCoversBandwidthTimesTheShortestRoundTrip) {
  using std::chrono::microseconds;
  constexpr uint64_t configured = 32u << 20;
  EXPECT_EQ(window_for_rtt(microseconds(0), configured), configured);  // not measured yet
  EXPECT_EQ(window_for_rtt(microseconds(300), configured), 4u << 20);  // a local link: the floor
  EXPECT_EQ(window_for_rtt(microseconds(20'000), configured), 8'000'000u);
  EXPECT_EQ(window_for_rtt(microseconds(100'000), configured), configured);  // the option caps it
  EXPECT_EQ(window_for_rtt(microseconds(300), 1u << 20), 1u << 20);  // a smaller option wins
}

}  // namespace
}  // namespace sftpfs::fs
