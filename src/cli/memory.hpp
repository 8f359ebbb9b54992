// Keeping the daemon's memory near what it really uses. Two parts:
// - tune_malloc(), once at start before any thread: glibc would otherwise make up to 8 arenas per
//   core (one per busy thread) and keep every large buffer freed after a load (its mmap threshold
//   grows to the largest freed block), so RSS stayed at 100 MB long after 64 readers had finished.
// - IdleTrimmer: a thread that, as soon as the mount goes quiet and every 10 s anyway, drops expired
//   cache entries and hands freed memory back to the kernel (malloc_trim).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace sftpfs::cli {

// Fixed glibc settings (see memory.cpp for each value and why). Call before any thread starts.
void tune_malloc();

// Resident memory of this process in bytes (VmRSS), 0 if unknown.
uint64_t resident_bytes();

class IdleTrimmer {
 public:
  struct Hooks {
    std::function<uint64_t()> activity;  // changes whenever the mount is busy (Filesystem::activity)
    std::function<size_t()> purge;       // drops expired cache entries (Filesystem::purge_caches)
  };
  // Looks every `interval`: trims as soon as a busy spell is over (what the load freed goes back within
  // `interval`), and anyway every `every` (cache entries expire 20 s after they were read, load or not).
  IdleTrimmer(Hooks hooks, std::chrono::milliseconds interval = std::chrono::seconds(2),
              std::chrono::milliseconds every = std::chrono::seconds(10));
  ~IdleTrimmer();  // stops and joins the thread
  IdleTrimmer(const IdleTrimmer&) = delete;
  IdleTrimmer& operator=(const IdleTrimmer&) = delete;

  uint64_t trims() const;  // for tests

 private:
  void run();

  const Hooks hooks_;
  const std::chrono::milliseconds interval_, every_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  uint64_t trims_ = 0;
  std::thread thread_;  // last: starts after everything it uses
};

}  // namespace sftpfs::cli
