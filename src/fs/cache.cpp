#include "fs/cache.hpp"

#include <algorithm>

#include "fs/inode_table.hpp"

namespace sftpfs::fs {

ClockFn steady_clock_fn() {
  return [] { return CacheClock::now(); };
}

Caches::Caches(Config config, ClockFn clock)
    : attrs(config.attr_ttl, config.max_attr_entries, clock),
      dirs(config.dir_ttl, config.max_dirs, clock),
      negative(config.negative_ttl, config.max_negative, clock),
      read_ahead(config.dir_ttl, config.max_dirs, clock),
      read_ahead_young(std::min(config.dir_ttl, std::max(kReadAheadServesReaddir, config.negative_ttl)), config.max_dirs,
                       clock) {}

std::optional<DirListing> Caches::listing_for_readdir(const std::string& dir_path) const {
  auto listing = dirs.get(dir_path);
  if (!listing) return std::nullopt;
  if (read_ahead.get(dir_path) && !read_ahead_young.get(dir_path)) return std::nullopt;
  return listing;
}

void Caches::put_listing(const std::string& dir_path, DirListing listing) {
  if (attrs.enabled()) {
    for (const auto& entry : *listing) {
      attrs.put(InodeTable::join(dir_path, entry.name),
                CachedAttrs{entry.attrs, entry.nlink});
    }
  }
  read_ahead.invalidate(dir_path);
  dirs.put(dir_path, std::move(listing));
}

uint64_t Caches::listing_stamp() const {
  std::lock_guard lock(stamps_mutex_);
  return stamp_;
}

bool Caches::put_listing_since(const std::string& dir_path, DirListing listing, uint64_t stamp, bool ahead) {
  {
    std::lock_guard lock(stamps_mutex_);
    if (all_touched_ >= stamp) return false;
    auto it = touched_.find(dir_path);
    if (it != touched_.end() && it->second >= stamp) return false;
  }
  put_listing(dir_path, std::move(listing));
  if (ahead) {
    read_ahead.put(dir_path, true);
    read_ahead_young.put(dir_path, true);
  }
  return true;
}

void Caches::touch_dir(const std::string& dir_path) {
  std::lock_guard lock(stamps_mutex_);
  if (touched_.size() >= kMaxTouched) {
    touched_.clear();
    all_touched_ = stamp_;
  }
  touched_[dir_path] = stamp_++;
}

void Caches::touch_all() {
  std::lock_guard lock(stamps_mutex_);
  touched_.clear();
  all_touched_ = stamp_++;
}

size_t Caches::purge_expired() {
  size_t purged = attrs.purge_expired() + dirs.purge_expired() + negative.purge_expired() +
                  read_ahead.purge_expired() + read_ahead_young.purge_expired();
  std::lock_guard lock(stamps_mutex_);
  // Stamps of many directories (an untar touches every one it fills) are worth less than their
  // memory once things are quiet: forgetting them costs at most a listing being read not being kept.
  if (touched_.size() > kPurgeTouchedAbove) {
    purged += touched_.size();
    std::unordered_map<std::string, uint64_t>().swap(touched_);  // clear() would keep the buckets
    all_touched_ = stamp_++;
  }
  return purged;
}

std::optional<std::optional<DirEntry>> Caches::from_listing(const std::string& dir_path, std::string_view name) const {
  auto listing = dirs.get(dir_path);
  if (!listing) return std::nullopt;
  const auto& entries = **listing;
  auto it = std::find_if(entries.begin(), entries.end(), [&](const DirEntry& e) { return e.name == name; });
  if (it == entries.end()) return std::optional<DirEntry>{};
  return std::optional<DirEntry>{*it};
}

std::string Caches::parent_path(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string Caches::leaf_name(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

namespace {

// A copy of `listing` with fn applied to its entries (copy on write: served listings are shared).
template <class F>
std::optional<DirListing> edited(const DirListing& listing, F fn) {
  if (!listing || listing->size() > Caches::kMaxEditedListing) return std::nullopt;
  auto copy = std::make_shared<std::vector<DirEntry>>(*listing);
  fn(*copy);
  return DirListing(std::move(copy));
}

}  // namespace

void Caches::dir_changed(const std::string& dir_path, const std::optional<AttrsAsked>& now) {
  // The directory's own attributes: its mtime moved (and its size and link count may have).
  touch_dir(parent_path(dir_path));  // a listing of its parent being read may carry the old ones
  if (now) {
    attrs.put_if_unchanged(dir_path, CachedAttrs{now->attrs, 0}, now->asked_at_version);
  } else {
    attrs.invalidate(dir_path);
  }
  const std::string name = leaf_name(dir_path);
  dirs.update(parent_path(dir_path), [&](const DirListing& listing) -> std::optional<DirListing> {
    auto it = std::find_if(listing->begin(), listing->end(), [&](const DirEntry& e) { return e.name == name; });
    if (it == listing->end() || it->attrs.flags == 0) return listing;  // nothing to forget: no copy
    return edited(listing, [&](std::vector<DirEntry>& entries) {
      for (auto& e : entries) {
        if (e.name == name) e.attrs = sftp::Attrs{};
      }
    });
  });
}

void Caches::changed(const std::string& path) {
  // Everything an attribute change forgets, and the node's own listing too.
  dir_attributes_changed(path);
  touch_dir(path);
  dirs.invalidate(path);
}

void Caches::dir_attributes_changed(const std::string& path) {
  // A listing of the parent being read may carry the old attributes; one of `path` itself is still
  // right (its names did not change), so `path` is not touched and its listing not dropped.
  touch_dir(parent_path(path));
  attrs.invalidate(path);
  negative.invalidate(path);
  const std::string name = leaf_name(path);
  dirs.update(parent_path(path), [&](const DirListing& listing) {
    return edited(listing, [&](std::vector<DirEntry>& entries) {
      for (auto& e : entries) {
        if (e.name == name) e.attrs = sftp::Attrs{};  // unknown: a lookup asks the server
      }
    });
  });
}

void Caches::changed_unknown(const std::string& path) {
  dir_changed(parent_path(path));
  touch_dir(parent_path(path));
  touch_dir(path);
  attrs.invalidate(path);
  negative.invalidate(path);
  dirs.invalidate(path);
  dirs.invalidate(parent_path(path));
}

void Caches::changed_tree(const std::string& path) {
  touch_all();
  dir_changed(parent_path(path));
  attrs.invalidate_tree(path);
  negative.invalidate_tree(path);
  dirs.invalidate_tree(path);
  dirs.invalidate(parent_path(path));
}

void Caches::added(const std::string& path, const std::optional<sftp::Attrs>& known, uint32_t nlink,
                   const std::optional<AttrsAsked>& parent_now) {
  dir_changed(parent_path(path), parent_now);
  touch_dir(parent_path(path));
  touch_dir(path);
  negative.invalidate(path);
  dirs.invalidate(path);
  if (known) {
    this->attrs.put(path, CachedAttrs{*known, nlink});
  } else {
    this->attrs.invalidate(path);
  }
  const std::string name = leaf_name(path);
  DirEntry entry{name, known.value_or(sftp::Attrs{}), nlink};
  dirs.update(parent_path(path), [&](const DirListing& listing) {
    return edited(listing, [&](std::vector<DirEntry>& entries) {
      auto it = std::find_if(entries.begin(), entries.end(), [&](const DirEntry& e) { return e.name == name; });
      if (it != entries.end()) {
        *it = entry;
      } else {
        entries.push_back(entry);
      }
    });
  });
}

void Caches::created_empty_dir(const std::string& path) {
  touch_dir(path);
  read_ahead.invalidate(path);
  dirs.put(path, std::make_shared<const std::vector<DirEntry>>());
}

void Caches::removed(const std::string& path) {
  dir_changed(parent_path(path));
  touch_dir(parent_path(path));
  touch_dir(path);
  attrs.invalidate_tree(path);
  negative.invalidate_tree(path);
  dirs.invalidate_tree(path);
  negative.put(path, true);  // the server's OK says the name is gone; a lookup next needs no LSTAT
  const std::string name = leaf_name(path);
  dirs.update(parent_path(path), [&](const DirListing& listing) {
    return edited(listing, [&](std::vector<DirEntry>& entries) {
      entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const DirEntry& e) { return e.name == name; }),
                    entries.end());
    });
  });
}

}  // namespace sftpfs::fs
