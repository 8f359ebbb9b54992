#include "fs/inode_table.hpp"

#include <algorithm>
#include <cassert>
#include <vector>

#include "util/log.hpp"

namespace sftpfs::fs {

InodeTable::InodeTable(std::string remote_root) : remote_root_(std::move(remote_root)) {
  Node root;
  root.lookups = 1;  // the kernel never forgets the root
  root.type = 0040000;
  nodes_.emplace(kRootIno, std::move(root));
}

std::string InodeTable::join(std::string_view dir, std::string_view name) {
  if (dir.empty()) dir = ".";
  bool slash = dir.back() == '/';
  std::string out;
  out.reserve(dir.size() + name.size() + 1);
  out.append(dir.data(), dir.size());
  if (!slash) out.push_back('/');
  out.append(name.data(), name.size());
  return out;
}

std::optional<Ino> InodeTable::link(Ino parent, std::string_view name, uint64_t lookups, mode_t type) {
  std::lock_guard lock(mutex_);
  auto p = nodes_.find(parent);
  if (p == nodes_.end() || p->second.detached) return std::nullopt;
  std::string key(name);
  auto c = p->second.children.find(key);
  if (c != p->second.children.end()) {
    Node& node = nodes_.at(c->second);
    node.lookups += lookups;
    if (type != 0) {
      if (node.type != 0 && node.type != type) node.nlink = 0;  // a different object now has this name
      node.type = type;
    }
    return c->second;
  }
  Ino ino = next_ino_++;
  Node node;
  node.parent = parent;
  node.name = key;
  node.lookups = lookups;
  node.type = type;
  p->second.children.emplace(std::move(key), ino);
  nodes_.emplace(ino, std::move(node));
  return ino;
}

std::optional<Ino> InodeTable::find(Ino parent, std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto p = nodes_.find(parent);
  if (p == nodes_.end()) return std::nullopt;
  auto c = p->second.children.find(std::string(name));
  if (c == p->second.children.end()) return std::nullopt;
  return c->second;
}

void InodeTable::forget(Ino ino, uint64_t count) {
  std::lock_guard lock(mutex_);
  if (ino == kRootIno) return;
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) {
    LOG_WARN("forget of unknown inode %llu", static_cast<unsigned long long>(ino));
    return;
  }
  if (it->second.lookups < count) {
    // The kernel never forgets more than it looked up; if it seems to, our count is wrong. Clamp
    // rather than wrap, and say so.
    LOG_ERROR("inode %llu: forget %llu exceeds lookup count %llu", static_cast<unsigned long long>(ino),
              static_cast<unsigned long long>(count), static_cast<unsigned long long>(it->second.lookups));
    it->second.lookups = 0;
  } else {
    it->second.lookups -= count;
  }
  maybe_erase_locked(ino);
}

void InodeTable::open_ref(Ino ino) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it != nodes_.end()) ++it->second.opens;
}

void InodeTable::close_ref(Ino ino) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.opens == 0) return;
  --it->second.opens;
  maybe_erase_locked(ino);
}

void InodeTable::maybe_erase_locked(Ino ino) {
  while (ino != kRootIno) {
    auto it = nodes_.find(ino);
    if (it == nodes_.end()) return;
    Node& node = it->second;
    if (node.lookups != 0 || node.opens != 0 || !node.children.empty()) return;
    Ino parent = node.parent;
    std::vector<std::pair<Ino, std::string>> others;
    if (!node.detached) {
      auto p = nodes_.find(parent);
      if (p != nodes_.end()) {
        auto c = p->second.children.find(node.name);
        if (c != p->second.children.end() && c->second == ino) p->second.children.erase(c);
      }
      others.swap(node.other_names);
      for (const auto& [op, on] : others) {
        auto o = nodes_.find(op);
        if (o == nodes_.end()) continue;
        auto c = o->second.children.find(on);
        if (c != o->second.children.end() && c->second == ino) o->second.children.erase(c);
      }
    }
    bool was_detached = node.detached;
    nodes_.erase(it);
    if (was_detached) return;  // a detached node is no longer its parent's child
    for (const auto& other : others) {
      if (other.first != parent) maybe_erase_locked(other.first);
    }
    ino = parent;  // the parent may have been kept only for this child
  }
}

std::optional<std::string> InodeTable::path_locked(Ino ino) const {
  std::vector<const std::string*> names;
  while (ino != kRootIno) {
    auto it = nodes_.find(ino);
    if (it == nodes_.end() || it->second.detached) return std::nullopt;
    names.push_back(&it->second.name);
    ino = it->second.parent;
  }
  std::string out = remote_root_;
  for (auto n = names.rbegin(); n != names.rend(); ++n) out = join(out, **n);
  return out;
}

std::optional<std::string> InodeTable::path(Ino ino) const {
  std::lock_guard lock(mutex_);
  return path_locked(ino);
}

std::optional<std::string> InodeTable::child_path(Ino parent, std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto dir = path_locked(parent);
  if (!dir) return std::nullopt;
  return join(*dir, name);
}

std::optional<Ino> InodeTable::parent_of(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.detached || ino == kRootIno) return std::nullopt;
  return it->second.parent;
}

void InodeTable::detach_locked(Ino ino) {
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.detached) return;
  Node& node = it->second;
  std::vector<Ino> parents{node.parent};
  auto p = nodes_.find(node.parent);
  if (p != nodes_.end()) {
    auto c = p->second.children.find(node.name);
    if (c != p->second.children.end() && c->second == ino) p->second.children.erase(c);
  }
  for (const auto& [op, on] : node.other_names) {
    parents.push_back(op);
    auto o = nodes_.find(op);
    if (o == nodes_.end()) continue;
    auto c = o->second.children.find(on);
    if (c != o->second.children.end() && c->second == ino) o->second.children.erase(c);
  }
  node.other_names.clear();
  node.detached = true;
  maybe_erase_locked(ino);
  for (Ino parent : parents) maybe_erase_locked(parent);
}

void InodeTable::remove_name_locked(Ino ino, Ino parent, const std::string& name, bool erase_parent) {
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.detached) return;
  Node& node = it->second;
  const bool primary = node.parent == parent && node.name == name;
  auto other = std::find_if(node.other_names.begin(), node.other_names.end(),
                            [&](const auto& n) { return n.first == parent && n.second == name; });
  if (!primary && other == node.other_names.end()) return;
  if (node.nlink > 1) --node.nlink;
  if (node.other_names.empty()) {
    // Its last name: an open handle keeps it alive, with no name and no links.
    node.nlink = 0;
    node.unlinked = true;
    return detach_locked(ino);
  }
  auto p = nodes_.find(parent);
  if (p != nodes_.end()) {
    auto c = p->second.children.find(name);
    if (c != p->second.children.end() && c->second == ino) p->second.children.erase(c);
  }
  if (primary) {
    node.parent = node.other_names.back().first;
    node.name = std::move(node.other_names.back().second);
    node.other_names.pop_back();
  } else {
    node.other_names.erase(other);
  }
  if (node.nlink == 0) node.nlink = 1 + static_cast<uint32_t>(node.other_names.size());
  if (erase_parent) maybe_erase_locked(parent);
}

bool InodeTable::add_name(Ino ino, Ino parent, std::string_view name) {
  std::lock_guard lock(mutex_);
  auto p = nodes_.find(parent);
  auto n = nodes_.find(ino);
  if (p == nodes_.end() || p->second.detached || n == nodes_.end() || n->second.detached) return false;
  std::string key(name);
  auto c = p->second.children.find(key);
  if (c != p->second.children.end()) {
    if (c->second == ino) return true;
    detach_locked(c->second);  // a node we had for a name the server now says is this file
  }
  // Look both up again: detaching may have erased nodes (never these two: the parent has children
  // or was checked above, and `ino` is not the detached one).
  n = nodes_.find(ino);
  p = nodes_.find(parent);
  if (p == nodes_.end() || n == nodes_.end()) return false;
  p->second.children[key] = ino;
  n->second.other_names.emplace_back(parent, std::move(key));
  return true;
}

std::optional<Ino> InodeTable::unlink(Ino parent, std::string_view name) {
  std::lock_guard lock(mutex_);
  auto p = nodes_.find(parent);
  if (p == nodes_.end()) return std::nullopt;
  auto c = p->second.children.find(std::string(name));
  if (c == p->second.children.end()) return std::nullopt;
  Ino ino = c->second;
  remove_name_locked(ino, parent, std::string(name));
  return ino;
}

std::vector<std::string> InodeTable::paths(Ino ino) const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.detached) return out;
  if (auto p = path_locked(ino)) out.push_back(*p);
  for (const auto& [op, on] : it->second.other_names) {
    if (auto dir = path_locked(op)) out.push_back(join(*dir, on));
  }
  return out;
}

bool InodeTable::unlinked(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  return it != nodes_.end() && it->second.unlinked;
}

std::optional<Ino> InodeTable::rename(Ino old_parent, std::string_view old_name, Ino new_parent,
                                      std::string_view new_name) {
  std::lock_guard lock(mutex_);
  auto op = nodes_.find(old_parent);
  auto np = nodes_.find(new_parent);
  if (op == nodes_.end() || np == nodes_.end()) return std::nullopt;
  std::string old_key(old_name), new_key(new_name);
  auto src = op->second.children.find(old_key);
  std::optional<Ino> replaced;
  if (src == op->second.children.end()) {
    // We never handed out a node for the source: only the target's node (if any) is affected.
    auto dst = np->second.children.find(new_key);
    if (dst != np->second.children.end()) {
      replaced = dst->second;
      remove_name_locked(*replaced, new_parent, new_key);
    }
    return replaced;
  }
  Ino moving = src->second;
  auto dst = np->second.children.find(new_key);
  if (dst != np->second.children.end()) {
    if (dst->second == moving) return std::nullopt;  // onto itself, or onto another name of the same file
    replaced = dst->second;
    // The replaced node loses the name. Removing it may erase nodes, but never `moving` (it is still
    // its parent's child), nor the parents (they have `moving` or the replaced node as children).
    auto rit = nodes_.find(*replaced);
    if (rit->second.other_names.empty() || rit->second.detached) {
      rit->second.nlink = 0;
      rit->second.unlinked = true;
      rit->second.detached = true;
      np->second.children.erase(dst);
      maybe_erase_locked(*replaced);
    } else {
      remove_name_locked(*replaced, new_parent, new_key, /*erase_parent=*/false);
    }
  }
  // Iterators may be stale after erasures: look the parents up again.
  nodes_.at(old_parent).children.erase(old_key);
  Node& node = nodes_.at(moving);
  if (node.parent == old_parent && node.name == old_key) {
    node.parent = new_parent;
    node.name = new_key;
  } else {
    for (auto& other : node.other_names) {
      if (other.first == old_parent && other.second == old_key) other = {new_parent, new_key};
    }
  }
  nodes_.at(new_parent).children[new_key] = moving;
  if (old_parent != new_parent) maybe_erase_locked(old_parent);
  return replaced;
}

void InodeTable::set_nlink(Ino ino, uint32_t nlink) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it != nodes_.end()) it->second.nlink = nlink;
}

uint32_t InodeTable::nlink(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? 0 : it->second.nlink;
}

bool InodeTable::note_data_signature(Ino ino, uint64_t size, uint32_t mtime) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return false;
  Node& node = it->second;
  bool changed = node.has_signature && (node.size != size || node.mtime != mtime);
  node.has_signature = true;
  node.size = size;
  node.mtime = mtime;
  return changed;
}

void InodeTable::note_times(Ino ino, uint32_t atime, uint32_t mtime) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return;
  it->second.has_times = true;
  it->second.last_atime = atime;
  it->second.last_mtime = mtime;
}

std::optional<std::pair<uint32_t, uint32_t>> InodeTable::last_times(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || !it->second.has_times) return std::nullopt;
  return std::make_pair(it->second.last_atime, it->second.last_mtime);
}

mode_t InodeTable::type(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? 0 : it->second.type;
}

void InodeTable::set_type(Ino ino, mode_t type) {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  if (it != nodes_.end() && type != 0) it->second.type = type;
}

bool InodeTable::contains(Ino ino) const {
  std::lock_guard lock(mutex_);
  return nodes_.count(ino) != 0;
}

uint64_t InodeTable::lookup_count(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  return it == nodes_.end() ? 0 : it->second.lookups;
}

bool InodeTable::detached(Ino ino) const {
  std::lock_guard lock(mutex_);
  auto it = nodes_.find(ino);
  return it == nodes_.end() || it->second.detached;
}

size_t InodeTable::size() const {
  std::lock_guard lock(mutex_);
  return nodes_.size();
}

}  // namespace sftpfs::fs
