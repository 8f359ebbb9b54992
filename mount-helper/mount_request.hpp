// What mount(8) asks of a mount helper, and the sftpfs command line that does it.
//
// mount(8) runs `/sbin/mount.sftpfs SOURCE MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]` (and
// mount.fuse.sftpfs for type fuse.sftpfs). OPTIONS are the fstab line's options after libmount took out
// what is its own (defaults, x-*, comment=, noauto, ...); it still passes user, users, _netdev and
// nofail, which are for mount and systemd, not for the filesystem. Pure code: no I/O, no users.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

namespace sftpfs::mount_helper {

struct MountRequest {
  std::string program;     // "mount.sftpfs" or "mount.fuse.sftpfs", for messages
  std::string source;      // [user@]host:[path]
  std::string mountpoint;
  bool fake = false;       // -f: check everything, start nothing
  bool sloppy = false;     // -s: drop options sftpfs does not know (with a warning) instead of failing
  bool verbose = false;    // -v: show the sftpfs command line
  std::string setuid_user; // setuid=USER: run sftpfs as USER
  std::vector<std::string> options;  // for sftpfs, in the given order, quotes and escapes removed
  std::vector<std::string> ignored;  // the fstab words taken out (auto, user, _netdev, x-*, ...)
};

// Parses the helper's arguments (without argv[0]). `program` is argv[0]'s base name.
Result<MountRequest> parse_mount_arguments(std::string_view program, const std::vector<std::string>& args);

// Splits mount's option string at commas outside double quotes; `\,` is a literal comma (as sftpfs's
// -o takes it) and quotes around a value are removed (libmount lets fstab quote values with commas).
std::vector<std::string> split_mount_options(std::string_view text);

// Whether an option is one of fstab's words for mount(8) and systemd, with no meaning for sftpfs.
bool is_fstab_word(std::string_view option);

struct SftpfsCommand {
  std::vector<std::string> args;  // without argv[0]: SOURCE MOUNTPOINT -o OPT -o OPT ...
};
// The sftpfs command line for `request`. `home` is the home directory of the user sftpfs runs as: a
// relative IdentityFile is taken from there (at boot the working directory is /). `as_root`: the
// kernel mount gets dev and suid unless nodev/nosuid are given, as mount(8) does for every filesystem
// and mount.fuse3 for FUSE ones (FUSE's own default is nodev,nosuid); not for other users, for whom
// fusermount3 refuses them.
SftpfsCommand sftpfs_command(const MountRequest& request, const std::string& home, bool as_root);

}  // namespace sftpfs::mount_helper
