// What readlink shows for a symlink: sshfs's transform_symlinks and contain_symlinks.
//
// The kernel resolves a symlink's target on this machine, not on the server, so an absolute target
// names a local path and a relative one can climb out of the mount with "..".
// - transform: an absolute target inside the mounted remote directory becomes the relative path from
//   the link's directory, so it resolves through the mount (others stay as they are).
// - contain: a target that could resolve outside the mount is refused (EPERM, as sshfs does): every
//   absolute target, and every relative one with a ".." that is not a leading one, or with more leading
//   ".." than the link's directory is deep below the mount's root. Leading ".." are safe because the
//   kernel takes them from the link's own directory, whose parents are real directories of the mount;
//   a ".." after any other component could follow a symlink (lexical rules cannot know), so it is
//   refused. Applied after transform.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "util/result.hpp"

namespace sftpfs::fs {

struct SymlinkPolicy {
  bool transform = false;  // transform_symlinks
  bool contain = false;    // contain_symlinks
};

// `remote_root`: the mounted remote directory (absolute, as realpath gave it); `link_path`: the remote
// path of the link (under remote_root); `target`: what the server's READLINK said. Returns the target
// to show, or EPERM when `contain` refuses it.
Result<std::string> shown_symlink_target(std::string_view remote_root, std::string_view link_path,
                                         std::string_view target, SymlinkPolicy policy);

// The pieces, for tests and for other rewrites (a server that reports targets as absolute paths).
// An absolute `target` inside `remote_root` as a path relative to the directory of `link_path`;
// nullopt when it is not absolute or lies outside (or either path is not under the root).
std::optional<std::string> absolute_target_as_relative(std::string_view remote_root, std::string_view link_path,
                                                       std::string_view target);
// Whether `target`, read from a link `depth` directories below the mount's root, can only resolve
// inside the mount (see above).
bool target_stays_inside(std::string_view target, size_t depth);

}  // namespace sftpfs::fs
