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
      negative(config.negative_ttl, config.max_negative, clock) {}

void Caches::put_listing(const std::string& dir_path, DirListing listing) {
  if (attrs.enabled()) {
    for (const auto& entry : *listing) {
      attrs.put(InodeTable::join(dir_path, entry.name),
                CachedAttrs{entry.attrs, entry.nlink});
    }
  }
  dirs.put(dir_path, std::move(listing));
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

void Caches::changed(const std::string& path) {
  attrs.invalidate(path);
  negative.invalidate(path);
  dirs.invalidate(path);
  dirs.invalidate(parent_path(path));
}

void Caches::changed_tree(const std::string& path) {
  attrs.invalidate_tree(path);
  negative.invalidate_tree(path);
  dirs.invalidate_tree(path);
  dirs.invalidate(parent_path(path));
}

}  // namespace sftpfs::fs
