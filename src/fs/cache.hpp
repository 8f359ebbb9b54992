// Time-limited caches keyed by remote path: attributes, directory listings, negative lookups.
// Each takes its clock as a function, so tests drive time without sleeping. A ttl of zero disables a
// cache (put stores nothing). Each cache has its own mutex, a leaf lock: never held while calling out.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "sftp/protocol.hpp"

namespace sftpfs::fs {

using CacheClock = std::chrono::steady_clock;
using ClockFn = std::function<CacheClock::time_point()>;
ClockFn steady_clock_fn();

// A path-keyed map whose entries expire; invalidate_tree drops a path and everything below it.
template <class V>
class TtlMap {
 public:
  TtlMap(std::chrono::milliseconds ttl, size_t max_entries, ClockFn clock)
      : ttl_(ttl), max_entries_(max_entries), clock_(std::move(clock)) {}

  bool enabled() const { return ttl_.count() > 0 && max_entries_ > 0; }

  void put(const std::string& key, V value) {
    if (!enabled()) return;
    auto now = clock_();
    std::lock_guard lock(mutex_);
    put_locked(key, std::move(value), now);
  }

  // Every put or drop of a key moves its version (keys share 1024 counters: a change to another key
  // may move it too, which only makes put_if_unchanged refuse more often).
  uint64_t version(const std::string& key) const {
    std::lock_guard lock(mutex_);
    return version_locked(key);
  }
  // Puts `value` if the key's version is still `since` (nothing was put or dropped for it meanwhile);
  // else drops the key, as invalidate() would. For a value asked of the server at `since` that is
  // current only if no other change came in between.
  bool put_if_unchanged(const std::string& key, V value, uint64_t since) {
    auto now = clock_();
    std::lock_guard lock(mutex_);
    if (!enabled() || version_locked(key) != since) {
      map_.erase(key);
      changed_locked(key);
      return false;
    }
    put_locked(key, std::move(value), now);
    return true;
  }

  std::optional<V> get(const std::string& key) const {
    if (!enabled()) return std::nullopt;
    auto now = clock_();
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end() || it->second.expires <= now) {
      misses_.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    hits_.fetch_add(1, std::memory_order_relaxed);
    return it->second.value;
  }

  // How long a fresh entry has been in the map (since its put): nullopt when there is none.
  std::optional<std::chrono::milliseconds> age(const std::string& key) const {
    if (!enabled()) return std::nullopt;
    auto now = clock_();
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end() || it->second.expires <= now) return std::nullopt;
    return std::chrono::duration_cast<std::chrono::milliseconds>(ttl_ - (it->second.expires - now));
  }

  void invalidate(const std::string& key) {
    std::lock_guard lock(mutex_);
    map_.erase(key);
    changed_locked(key);
  }

  void invalidate_tree(const std::string& key) {
    std::lock_guard lock(mutex_);
    all_changed_ = ++changes_;
    map_.erase(key);
    std::string prefix = key;
    if (prefix.empty() || prefix.back() != '/') prefix.push_back('/');
    auto it = map_.lower_bound(prefix);
    while (it != map_.end() && it->first.compare(0, prefix.size(), prefix) == 0) it = map_.erase(it);
  }

  void clear() {
    std::lock_guard lock(mutex_);
    all_changed_ = ++changes_;
    map_.clear();
  }

  // Replaces a fresh entry's value with fn(old value), keeping its expiry; fn returns nullopt to drop
  // the entry. Nothing happens when there is no fresh entry.
  template <class F>
  void update(const std::string& key, F fn) {
    if (!enabled()) return;
    auto now = clock_();
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end()) return;
    if (it->second.expires <= now) {
      map_.erase(it);
      return;
    }
    changed_locked(key);
    std::optional<V> next = fn(it->second.value);
    if (next) {
      it->second.value = std::move(*next);
    } else {
      map_.erase(it);
    }
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return map_.size();
  }

  // Drops every expired entry (otherwise they go only when looked at or when the map is full), so an
  // idle mount does not keep a large listing's worth of dead entries. Returns how many went.
  size_t purge_expired() {
    auto now = clock_();
    std::lock_guard lock(mutex_);
    size_t before = map_.size();
    for (auto it = map_.begin(); it != map_.end();) it = it->second.expires <= now ? map_.erase(it) : std::next(it);
    return before - map_.size();
  }

  // get() calls answered with a fresh entry (hits) and without (misses), since the map was made.
  struct Counts {
    uint64_t hits = 0, misses = 0;
    size_t entries = 0;
  };
  Counts counts() const {
    return Counts{hits_.load(std::memory_order_relaxed), misses_.load(std::memory_order_relaxed), size()};
  }

 private:
  struct Entry {
    V value;
    CacheClock::time_point expires;
  };

  void put_locked(const std::string& key, V value, CacheClock::time_point now) {
    if (map_.size() >= max_entries_ && map_.find(key) == map_.end()) make_room_locked(now);
    map_.insert_or_assign(key, Entry{std::move(value), now + ttl_});
    changed_locked(key);
  }

  void make_room_locked(CacheClock::time_point now) {
    for (auto it = map_.begin(); it != map_.end();) it = it->second.expires <= now ? map_.erase(it) : std::next(it);
    // Still full of live entries: drop everything rather than track recency; the cache refills.
    if (map_.size() >= max_entries_) map_.clear();
  }

  static constexpr size_t kVersionSlots = 1024;
  static size_t slot(const std::string& key) { return std::hash<std::string>{}(key) % kVersionSlots; }
  void changed_locked(const std::string& key) { changed_[slot(key)] = ++changes_; }
  uint64_t version_locked(const std::string& key) const { return std::max(all_changed_, changed_[slot(key)]); }

  const std::chrono::milliseconds ttl_;
  const size_t max_entries_;
  const ClockFn clock_;
  mutable std::mutex mutex_;  // leaf lock
  std::map<std::string, Entry> map_;
  mutable std::atomic<uint64_t> hits_{0}, misses_{0};
  uint64_t changes_ = 0, all_changed_ = 0;  // versions (guarded by mutex_)
  std::array<uint64_t, kVersionSlots> changed_{};
};

// What the server said about a path, and the link count READDIR's longname gave (0 = unknown).
struct CachedAttrs {
  sftp::Attrs attrs;
  uint32_t nlink = 0;
};

struct DirEntry {
  std::string name;
  sftp::Attrs attrs;
  uint32_t nlink = 0;  // from the longname; 0 = unknown
};
using DirListing = std::shared_ptr<const std::vector<DirEntry>>;

// The three caches the filesystem keeps, with the invalidations a change made through this mount needs.
class Caches {
 public:
  struct Config {
    std::chrono::milliseconds attr_ttl{0}, dir_ttl{0}, negative_ttl{0};
    size_t max_attr_entries = 200000;
    size_t max_dirs = 10000;
    size_t max_negative = 10000;
  };
  Caches(Config config, ClockFn clock);

  TtlMap<CachedAttrs> attrs;
  TtlMap<DirListing> dirs;
  TtlMap<bool> negative;
  TtlMap<bool> read_ahead;  // listings in `dirs` that were read ahead (they serve a readdir only while young)
  // A listing read ahead serves a readdir only this long after it was read, or negative_timeout when
  // longer (a name created elsewhere then shows in a readdir as soon as a lookup would find it): an
  // application walking a tree opens the directory within moments, or seconds when it reads every
  // file on the way (grep -r); later, a readdir nobody prepared for reads afresh.
  static constexpr std::chrono::milliseconds kReadAheadServesReaddir{2000};
  TtlMap<bool> read_ahead_young;
  // The listing a readdir may be served from, if any.
  std::optional<DirListing> listing_for_readdir(const std::string& dir_path) const;

  // Records a directory listing and feeds every entry's attributes to the attribute cache.
  void put_listing(const std::string& dir_path, DirListing listing);

  // A listing read from the server is only as new as the moment its reading started: a change this
  // mount made in the directory meanwhile would be missing from it. Take a stamp before reading and
  // record the listing with put_listing_since, which drops it if the directory changed since.
  uint64_t listing_stamp() const;
  // `read_ahead`: read before the application asked (it serves a readdir only while young). Like any
  // listing it says "absent" for the names it lacks; the caller answers so only within
  // negative_timeout of the listing's reading (`dirs.age`), as for a negative entry.
  bool put_listing_since(const std::string& dir_path, DirListing listing, uint64_t stamp, bool read_ahead = false);
  // Looks for `name` in a fresh listing of `dir_path`: nullopt = no listing; a listing without the
  // name answers "absent" (an entry with an empty name). The caller checks the listing's age before
  // answering "absent" (the negative rule).
  std::optional<std::optional<DirEntry>> from_listing(const std::string& dir_path, std::string_view name) const;

  // The attributes or data of the existing `path` changed: forget what we knew about it; in its
  // parent's listing the entry stays (the name still exists) but its attributes become unknown.
  void changed(const std::string& path);
  // Only the attributes of the directory `path` changed (chmod, chown, utimens): as changed(), but its
  // own listing stays (no name in it changed), so lookups inside are still answered locally.
  void dir_attributes_changed(const std::string& path);
  // Something at `path` changed in a way we cannot describe (a failed request): forget it and its
  // parent's listing.
  void changed_unknown(const std::string& path);
  // A subtree moved or went away: forget everything under it too, and the parent's listing.
  void changed_tree(const std::string& path);

  // This mount created `path` (attributes when known). A listing this mount keeps of the parent gains
  // the name, so lookups of other new names there are still answered locally: a directory this mount
  // created is known empty, and untar's LOOKUP before each create needs no round trip.
  // `parent_now`: the parent directory's attributes read right after the change (back to back with
  // it on one connection), and attrs.version() of the parent when they were asked: kept instead of
  // forgotten unless something else changed the parent's entry meanwhile.
  struct AttrsAsked {
    sftp::Attrs attrs;
    uint64_t asked_at_version = 0;
  };
  void added(const std::string& path, const std::optional<sftp::Attrs>& attrs, uint32_t nlink = 0,
             const std::optional<AttrsAsked>& parent_now = std::nullopt);
  // This mount created the directory `path`: it is empty.
  void created_empty_dir(const std::string& path);
  // This mount removed `path` (and everything below it): its parent's listing loses the name, and the
  // name is remembered missing (the server just said so: the negative rule's clock starts now).
  void removed(const std::string& path);

  // A rename moved whole subtrees: listings being read now may describe the old state.
  void subtrees_moved() { touch_all(); }

  // Drops the expired entries of every cache (the idle trimmer calls this). Returns how many went.
  size_t purge_expired();

  // Listings larger than this are dropped rather than edited (each edit copies the listing).
  static constexpr size_t kMaxEditedListing = 2000;


  static std::string parent_path(const std::string& path);
  // The last component of a path (the whole of it when it has no slash).
  static std::string leaf_name(const std::string& path);

 private:
  // A name in `dir_path` was added, removed or replaced: the directory's own attributes (mtime, size,
  // link count) are no longer what we knew, here and in its parent's listing.
  void dir_changed(const std::string& dir_path, const std::optional<AttrsAsked>& now = std::nullopt);
  // The directory's contents changed through this mount (every change to a name in it comes here).
  void touch_dir(const std::string& dir_path);
  // Something moved whole subtrees: every listing being read may be stale.
  void touch_all();

  mutable std::mutex stamps_mutex_;  // leaf
  uint64_t stamp_ = 1;
  uint64_t all_touched_ = 0;                            // stamp of the last touch_all
  std::unordered_map<std::string, uint64_t> touched_;   // directory -> stamp of its last change
  static constexpr size_t kMaxTouched = 100000;         // then touch_all() and start over
  static constexpr size_t kPurgeTouchedAbove = 1000;    // purge_expired() forgets more than this
};

}  // namespace sftpfs::fs
