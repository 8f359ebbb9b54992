#include "fs/attr_map.hpp"

#include <cerrno>
#include <charconv>
#include <limits>

#include "util/log.hpp"

namespace sftpfs::fs {

std::optional<uint32_t> longname_link_count(std::string_view longname) {
  // First column: the mode string, ten characters starting with a file type letter.
  size_t end = longname.find_first_of(" \t");
  if (end == std::string_view::npos || end < 10) return std::nullopt;
  if (std::string_view("-dlcbps").find(longname[0]) == std::string_view::npos) return std::nullopt;
  size_t start = longname.find_first_not_of(" \t", end);
  if (start == std::string_view::npos) return std::nullopt;
  size_t stop = longname.find_first_of(" \t", start);
  if (stop == std::string_view::npos) return std::nullopt;  // a count must be followed by more columns
  std::string_view digits = longname.substr(start, stop - start);
  uint32_t value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || value == 0) return std::nullopt;
  return value;
}

namespace {

Result<uint32_t> map_in(uint32_t id, const std::optional<uint32_t>& remote_self, uint32_t local_self,
                        const std::map<uint32_t, uint32_t>& file_map, const FsOptions& options) {
  switch (options.idmap) {
    case IdMap::none: return id;
    case IdMap::user:
      // sshfs: the remote user's id shows as the mounting user's; other ids stay as they are.
      if (remote_self && id == *remote_self) return local_self;
      return id;
    case IdMap::file: {
      auto it = file_map.find(id);
      if (it != file_map.end()) return it->second;
      if (options.nomap_error) return Error::errno_error(EPERM, "no mapping for remote id " + std::to_string(id));
      return id;
    }
  }
  return id;
}

Result<uint32_t> map_out(uint32_t id, const std::optional<uint32_t>& remote_self, uint32_t local_self,
                         const std::map<uint32_t, uint32_t>& file_map, const FsOptions& options) {
  switch (options.idmap) {
    case IdMap::none: return id;
    case IdMap::user:
      if (remote_self && id == local_self) return *remote_self;
      return id;
    case IdMap::file:
      for (const auto& [remote, local] : file_map) {
        if (local == id) return remote;
      }
      if (options.nomap_error) return Error::errno_error(EPERM, "no mapping for local id " + std::to_string(id));
      return id;
  }
  return id;
}

}  // namespace

Result<uint32_t> map_uid_in(uint32_t remote_uid, const FsOptions& o) {
  return map_in(remote_uid, o.remote_uid, o.local_uid, o.uid_map, o);
}
Result<uint32_t> map_gid_in(uint32_t remote_gid, const FsOptions& o) {
  return map_in(remote_gid, o.remote_gid, o.local_gid, o.gid_map, o);
}
Result<uint32_t> map_uid_out(uint32_t local_uid, const FsOptions& o) {
  return map_out(local_uid, o.remote_uid, o.local_uid, o.uid_map, o);
}
Result<uint32_t> map_gid_out(uint32_t local_gid, const FsOptions& o) {
  return map_out(local_gid, o.remote_gid, o.local_gid, o.gid_map, o);
}

Result<struct stat> attrs_to_kernel_stat(const sftp::Attrs& attrs, uint64_t ino, uint32_t nlink,
                                         const FsOptions& options) {
  struct stat st {};
  if (attrs.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) {
    st.st_mode = attrs.permissions;
    if ((st.st_mode & S_IFMT) == 0) st.st_mode |= S_IFREG;  // a server that sends no type: a file
  } else {
    st.st_mode = S_IFREG | 0644;
  }
  if (attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE)) st.st_size = static_cast<off_t>(
      std::min<uint64_t>(attrs.size, static_cast<uint64_t>(std::numeric_limits<off_t>::max())));
  if (attrs.has(sftp::SSH_FILEXFER_ATTR_UIDGID)) {
    auto uid = map_uid_in(attrs.uid, options);
    if (!uid) return uid.take_error();
    auto gid = map_gid_in(attrs.gid, options);
    if (!gid) return gid.take_error();
    st.st_uid = *uid;
    st.st_gid = *gid;
  }
  if (options.uid) st.st_uid = *options.uid;
  if (options.gid) st.st_gid = *options.gid;
  if (options.umask) st.st_mode &= ~(*options.umask & 07777);
  if (attrs.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) {
    st.st_atim.tv_sec = attrs.atime;
    st.st_mtim.tv_sec = attrs.mtime;
    st.st_ctim.tv_sec = attrs.mtime;
  }
  st.st_ino = ino;
  st.st_nlink = nlink == 0 ? 1 : nlink;
  st.st_blksize = 65536;
  st.st_blocks = (st.st_size + 511) / 512;
  return st;
}

bool setattr_needs_current(const SetattrRequest& r) {
  bool one_time = (r.atime.kind == TimeSpec::Kind::omit) != (r.mtime.kind == TimeSpec::Kind::omit);
  bool one_id = r.uid.has_value() != r.gid.has_value();
  return one_time || one_id;
}

namespace {
Result<uint32_t> v3_time(const TimeSpec& t, int64_t now) {
  int64_t seconds = t.kind == TimeSpec::Kind::now ? now : t.seconds;
  if (!sftp::time_fits_v3(seconds)) {
    return Error::errno_error(EOVERFLOW, "time " + std::to_string(seconds) + " does not fit SFTP v3's 32-bit seconds");
  }
  return static_cast<uint32_t>(seconds);
}
}  // namespace

Result<sftp::Attrs> build_setattr(const SetattrRequest& r, const std::optional<sftp::Attrs>& current, int64_t now,
                                  const FsOptions& options) {
  sftp::Attrs out;
  if (setattr_needs_current(r) && !current) return Error::errno_error(EIO, "setattr needs the current attributes");
  if (r.size) out.set_size(*r.size);
  if (r.uid || r.gid) {
    uint32_t uid = 0, gid = 0;
    if (r.uid) {
      auto mapped = map_uid_out(*r.uid, options);
      if (!mapped) return mapped.take_error();
      uid = *mapped;
    } else {
      if (!current->has(sftp::SSH_FILEXFER_ATTR_UIDGID)) return Error::errno_error(EIO, "server sent no owner");
      uid = current->uid;
    }
    if (r.gid) {
      auto mapped = map_gid_out(*r.gid, options);
      if (!mapped) return mapped.take_error();
      gid = *mapped;
    } else {
      if (!current->has(sftp::SSH_FILEXFER_ATTR_UIDGID)) return Error::errno_error(EIO, "server sent no owner");
      gid = current->gid;
    }
    out.set_owner(uid, gid);
  }
  if (r.mode) out.set_permissions(*r.mode & 07777);
  if (r.atime.kind != TimeSpec::Kind::omit || r.mtime.kind != TimeSpec::Kind::omit) {
    uint32_t atime = 0, mtime = 0;
    if (r.atime.kind != TimeSpec::Kind::omit) {
      auto t = v3_time(r.atime, now);
      if (!t) return t.take_error();
      atime = *t;
    } else {
      if (!current->has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) return Error::errno_error(EIO, "server sent no times");
      atime = current->atime;
    }
    if (r.mtime.kind != TimeSpec::Kind::omit) {
      auto t = v3_time(r.mtime, now);
      if (!t) return t.take_error();
      mtime = *t;
    } else {
      if (!current->has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) return Error::errno_error(EIO, "server sent no times");
      mtime = current->mtime;
    }
    out.set_times(atime, mtime);
  }
  return out;
}

// 0 when what the server shows after an acknowledged SETSTAT is what was asked; else the errno for
// a change it did not make: EPERM for mode or owner, EIO for a size (data may be lost).
int ignored_change(const SetattrRequest& r, const sftp::Attrs& sent, const sftp::Attrs& now) {
  if (r.size && now.has(sftp::SSH_FILEXFER_ATTR_SIZE) && now.size != *r.size) {
    LOG_WARN("the server acknowledged a truncation to %llu bytes but the file has %llu",
             static_cast<unsigned long long>(*r.size), static_cast<unsigned long long>(now.size));
    return EIO;
  }
  // Set-id bits may be cleared by the server's kernel as a local chmod would: not compared.
  constexpr uint32_t kCompared = 01777;
  if (r.mode && sent.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) && now.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) &&
      (now.permissions & kCompared) != (sent.permissions & kCompared)) {
    LOG_WARN("the server acknowledged mode %o but the file has %o", sent.permissions & 07777, now.permissions & 07777);
    return EPERM;
  }
  if ((r.uid || r.gid) && sent.has(sftp::SSH_FILEXFER_ATTR_UIDGID) && now.has(sftp::SSH_FILEXFER_ATTR_UIDGID) &&
      (now.uid != sent.uid || now.gid != sent.gid)) {
    LOG_WARN("the server acknowledged owner %u:%u but the file has %u:%u", sent.uid, sent.gid, now.uid, now.gid);
    return EPERM;
  }
  return 0;
}

sftp::Attrs merge_attrs(sftp::Attrs base, const sftp::Attrs& sent) {
  if (sent.has(sftp::SSH_FILEXFER_ATTR_SIZE)) base.set_size(sent.size);
  if (sent.has(sftp::SSH_FILEXFER_ATTR_UIDGID)) base.set_owner(sent.uid, sent.gid);
  if (sent.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS)) {
    uint32_t type = base.has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) ? (base.permissions & S_IFMT) : 0;
    base.set_permissions(type | (sent.permissions & 07777));
  }
  if (sent.has(sftp::SSH_FILEXFER_ATTR_ACMODTIME)) base.set_times(sent.atime, sent.mtime);
  return base;
}

}  // namespace sftpfs::fs
