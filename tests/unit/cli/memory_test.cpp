// The idle trimmer: trims when a busy spell ends, not while busy, and again periodically.
#include "cli/memory.hpp"

#include <gtest/gtest.h>

#include <atomic>

namespace sftpfs::cli {
namespace {

using namespace std::chrono_literals;

TEST(IdleTrimmer, TrimsOncePerQuietSpellAndPeriodically) {
  std::atomic<uint64_t> activity{0};
  std::atomic<int> purges{0};
  {
    IdleTrimmer trimmer({[&] { return activity.load(); }, [&] { return static_cast<size_t>(++purges); }}, 20ms,
                        10s);
    // Busy: activity changes every look, no trim.
    for (int i = 0; i < 10; ++i) {
      ++activity;
      std::this_thread::sleep_for(10ms);
    }
    int while_busy = purges.load();
    EXPECT_LE(while_busy, 1);  // at most one, if a look fell between two increments
    // Quiet: one trim, then none until the periodic one (10 s away).
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(purges.load(), while_busy + 1);
    EXPECT_EQ(trimmer.trims(), static_cast<uint64_t>(purges.load()));
  }
  EXPECT_GT(resident_bytes(), 0u);
}

TEST(IdleTrimmer, PeriodicPassWhileBusy) {
  std::atomic<uint64_t> activity{0};
  std::atomic<int> purges{0};
  IdleTrimmer trimmer({[&] { return ++activity; }, [&] { return static_cast<size_t>(++purges); }}, 10ms, 50ms);
  std::this_thread::sleep_for(300ms);
  EXPECT_GE(purges.load(), 2);
}

}  // namespace
}  // namespace sftpfs::cli
