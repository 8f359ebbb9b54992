#include "cli/memory.hpp"

#include <malloc.h>

#include <fstream>
#include <string>

#include "util/log.hpp"

namespace sftpfs::cli {

void tune_malloc() {
  // Two arenas: FUSE loop threads and connection I/O threads would otherwise get one each (up to 8
  // per core), every one holding its own freed memory. Their work is copying buffers, not malloc:
  // sharing two costs nothing measurable.
  mallopt(M_ARENA_MAX, 2);
  // Blocks of 4 MiB and more (a large directory's listing, a grown receive buffer) come from mmap and
  // go back to the kernel when freed. Setting it also stops glibc from raising the threshold to the
  // largest block freed (up to 32 MiB), after which such blocks stayed in the heap. Not lower: the
  // ~1 MiB buffers every read and write passes through (prefetch segments, kernel writes) would then
  // be an mmap, page faults and munmap each, which measured 80% more CPU per byte (read and write);
  // they reuse heap memory instead, and the idle trimmer returns it (malloc_trim).
  mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
  // Free memory at the top of a heap beyond 8 MiB goes back at once; holes in the middle go back at
  // the idle trimmer's malloc_trim.
  mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

uint64_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      uint64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(1 << 16, '\n');
  }
  return 0;
}

IdleTrimmer::IdleTrimmer(Hooks hooks, std::chrono::milliseconds interval, std::chrono::milliseconds every)
    : hooks_(std::move(hooks)), interval_(interval), every_(every), thread_([this] { run(); }) {}

IdleTrimmer::~IdleTrimmer() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

uint64_t IdleTrimmer::trims() const {
  std::lock_guard lock(mutex_);
  return trims_;
}

void IdleTrimmer::run() {
  using Clock = std::chrono::steady_clock;
  uint64_t seen = hooks_.activity();
  bool trimmed_since_busy = false;
  auto last_trim = Clock::now();
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, interval_, [&] { return stop_; })) {
    lock.unlock();
    uint64_t now_seen = hooks_.activity();
    bool quiet = now_seen == seen;
    seen = now_seen;
    if (!quiet) trimmed_since_busy = false;
    // At the start of a quiet spell the load that just ended has left freed buffers; the periodic pass
    // catches cache entries expiring later (a trim costs a few milliseconds: cheap to do often).
    bool due = (quiet && !trimmed_since_busy) || Clock::now() - last_trim >= every_;
    if (due) {
      size_t purged = hooks_.purge();
      malloc_trim(0);
      last_trim = Clock::now();
      trimmed_since_busy = quiet;
      LOG_DEBUG("memory: %zu expired cache entries dropped, resident now %llu KiB", purged,
                static_cast<unsigned long long>(resident_bytes() >> 10));
    }
    lock.lock();
    if (due) ++trims_;
  }
}

}  // namespace sftpfs::cli
