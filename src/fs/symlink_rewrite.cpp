#include "fs/symlink_rewrite.hpp"

#include <cerrno>
#include <optional>
#include <vector>

namespace sftpfs::fs {

namespace {

// Path components, without empty ones (repeated or trailing slashes) and without ".".
std::vector<std::string_view> components(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t slash = path.find('/', i);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(i, slash - i);
    if (!part.empty() && part != ".") out.push_back(part);
    i = slash + 1;
  }
  return out;
}

bool starts_with(const std::vector<std::string_view>& path, const std::vector<std::string_view>& prefix) {
  if (prefix.size() > path.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (path[i] != prefix[i]) return false;
  return true;
}

// The link's directory below the root, as components; nullopt when the link is not under the root.
std::optional<std::vector<std::string_view>> link_directory(std::string_view remote_root, std::string_view link_path) {
  auto root = components(remote_root);
  auto link = components(link_path);
  if (link.empty() || !starts_with(link, root) || link.size() == root.size()) return std::nullopt;
  return std::vector<std::string_view>(link.begin() + static_cast<std::ptrdiff_t>(root.size()), link.end() - 1);
}

}  // namespace

std::optional<std::string> absolute_target_as_relative(std::string_view remote_root, std::string_view link_path,
                                                       std::string_view target) {
  if (target.empty() || target[0] != '/' || remote_root.empty() || remote_root[0] != '/') return std::nullopt;
  auto dir = link_directory(remote_root, link_path);
  if (!dir) return std::nullopt;
  auto root = components(remote_root);
  auto absolute = components(target);
  if (!starts_with(absolute, root)) return std::nullopt;
  std::vector<std::string_view> rest(absolute.begin() + static_cast<std::ptrdiff_t>(root.size()), absolute.end());
  // A ".." below the root could lead anywhere on the server (through its symlinks): not rewritten.
  for (auto part : rest)
    if (part == "..") return std::nullopt;
  size_t common = 0;
  while (common < dir->size() && common < rest.size() && (*dir)[common] == rest[common]) ++common;
  std::string out;
  for (size_t i = common; i < dir->size(); ++i) out += out.empty() ? ".." : "/..";
  for (size_t i = common; i < rest.size(); ++i) {
    if (!out.empty()) out += '/';
    out += rest[i];
  }
  return out.empty() ? std::string(".") : out;
}

bool target_stays_inside(std::string_view target, size_t depth) {
  if (!target.empty() && target[0] == '/') return false;
  size_t leading = 0;
  bool below = false;  // past the leading ".."s
  for (auto part : components(target)) {
    if (part == "..") {
      if (below) return false;
      if (++leading > depth) return false;
    } else {
      below = true;
    }
  }
  return true;
}

Result<std::string> shown_symlink_target(std::string_view remote_root, std::string_view link_path,
                                         std::string_view target, SymlinkPolicy policy) {
  std::string shown(target);
  if (policy.transform) {
    if (auto relative = absolute_target_as_relative(remote_root, link_path, target)) shown = std::move(*relative);
  }
  if (policy.contain) {
    auto dir = link_directory(remote_root, link_path);
    if (!target_stays_inside(shown, dir ? dir->size() : 0))
      return Error::errno_error(EPERM, "symlink " + std::string(link_path) + " -> " + std::string(target) +
                                           " leads out of the mount (contain_symlinks)");
  }
  return shown;
}

}  // namespace sftpfs::fs
