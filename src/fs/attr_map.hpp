// Pure translations between what the server says and what the kernel sees: ATTRS -> struct stat with
// sshfs's ownership options, setattr requests -> the ATTRS a SETSTAT carries, READDIR longnames -> link
// counts. No I/O, so all of it is unit-tested.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "fs/filesystem.hpp"
#include "sftp/protocol.hpp"
#include "util/result.hpp"

namespace sftpfs::fs {

// The link count in an `ls -l` style longname ("-rw-r--r--    2 user group ..."), when there is one.
std::optional<uint32_t> longname_link_count(std::string_view longname);

// A server id as the kernel should see it, or an error (nomap=error and no mapping).
Result<uint32_t> map_uid_in(uint32_t remote_uid, const FsOptions& options);
Result<uint32_t> map_gid_in(uint32_t remote_gid, const FsOptions& options);
// The reverse, for chown: a local id as the server should see it.
Result<uint32_t> map_uid_out(uint32_t local_uid, const FsOptions& options);
Result<uint32_t> map_gid_out(uint32_t local_gid, const FsOptions& options);

// The stat the kernel gets: st_ino = ino, st_nlink = nlink (1 when unknown), owner mapped, umask
// applied, times from the ATTRS (ctime = mtime: v3 has no ctime).
Result<struct stat> attrs_to_kernel_stat(const sftp::Attrs& attrs, uint64_t ino, uint32_t nlink,
                                         const FsOptions& options);

// One time of a setattr request.
struct TimeSpec {
  enum class Kind { omit, now, value } kind = Kind::omit;
  int64_t seconds = 0;  // for value
};

struct SetattrRequest {
  std::optional<mode_t> mode;
  std::optional<uint32_t> uid, gid;  // local ids
  std::optional<uint64_t> size;
  TimeSpec atime, mtime;
};

// Whether building the SETSTAT needs the file's current attributes: SFTP v3 sets both times at once
// and uid with gid, so a half given pair is completed from what the file has now.
bool setattr_needs_current(const SetattrRequest& request);

// The ATTRS to send. `current` must be given when setattr_needs_current says so; `now` fills
// UTIME_NOW. Times outside SFTP v3's unsigned 32-bit seconds are refused with EOVERFLOW, never wrapped.
Result<sftp::Attrs> build_setattr(const SetattrRequest& request, const std::optional<sftp::Attrs>& current,
                                  int64_t now, const FsOptions& options);

// `base` with the fields of `sent` applied: the attributes after a successful SETSTAT.
sftp::Attrs merge_attrs(sftp::Attrs base, const sftp::Attrs& sent);

// 0 when what the server shows after an acknowledged SETSTAT (`now`) is what was asked (`sent`);
// else the errno for a change it did not make: EPERM for mode or owner, EIO for a size.
int ignored_change(const SetattrRequest& request, const sftp::Attrs& sent, const sftp::Attrs& now);

}  // namespace sftpfs::fs
