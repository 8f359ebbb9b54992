// What the filesystem can say about itself without asking the server: cache hit counts, budgets in
// use, activity (for `sftpfs --status` and the idle trimmer in cli/memory.*), and purging expired
// cache entries.
#include "fs/filesystem_impl.hpp"

namespace sftpfs::fs {

namespace {

template <class V>
Filesystem::CacheStats::One counted(const char* name, const TtlMap<V>& map) {
  auto c = map.counts();
  return Filesystem::CacheStats::One{name, c.hits, c.misses, c.entries};
}

}  // namespace

Filesystem::CacheStats Filesystem::stats() const {
  const Impl& fs = *impl_;
  CacheStats out;
  out.caches.push_back(counted("attributes", fs.caches.attrs));
  out.caches.push_back(counted("listings", fs.caches.dirs));
  out.caches.push_back(counted("negative", fs.caches.negative));
  out.prefetch_used = fs.prefetch_budget->used();
  out.prefetch_budget = fs.prefetch_budget->limit();
  out.write_behind_used = fs.write_behind_used.load();
  out.write_behind_budget = fs.opt.write_behind_budget;
  out.inodes = fs.inodes.size();
  auto small = fs.small_files->counts();
  out.small_files_started = small.started;
  out.small_files_served = small.served;
  out.small_files_discarded = small.discarded;
  out.small_files_held = small.held;
  return out;
}

const std::shared_ptr<client::Client>& Filesystem::client() const { return impl_->client; }

uint64_t Filesystem::activity() const { return impl_->calls_started.load(std::memory_order_relaxed); }

size_t Filesystem::purge_caches() { return impl_->caches.purge_expired(); }

}  // namespace sftpfs::fs
