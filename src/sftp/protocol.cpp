// Requests and replies of SFTP v3 and OpenSSH's extensions (layouts: draft-ietf-secsh-filexfer-02 and
// OpenSSH's PROTOCOL file, section 4).
#include "sftp/protocol.hpp"

#include <cerrno>
#include <limits>

#include "sftp/wire.hpp"

namespace sftpfs::sftp {

namespace {

// ---- requests ----

Writer request(PacketType type, uint32_t id, size_t body_hint = 64) {
  Writer w(type, body_hint + 4);
  w.u32(id);
  return w;
}

Writer extended(uint32_t id, std::string_view name, size_t args_hint = 64) {
  Writer w = request(SSH_FXP_EXTENDED, id, 4 + name.size() + args_hint);
  w.string(name);
  return w;
}

Bytes one_string(PacketType type, uint32_t id, std::string_view s) {
  return request(type, id, 4 + s.size()).string(s).finish();
}

Bytes two_strings(PacketType type, uint32_t id, std::string_view a, std::string_view b) {
  return request(type, id, 8 + a.size() + b.size()).string(a).string(b).finish();
}

// ---- replies ----

Result<StatusReply> parse_status(Reader& r) {
  StatusReply s;
  SFTPFS_ASSIGN_OR_RETURN(s.code, r.u32());
  // Draft 02 has no message or language tag and some v3 servers still omit them: absent means empty.
  if (!r.at_end()) {
    SFTPFS_ASSIGN_OR_RETURN(s.message, r.string());
  }
  if (!r.at_end()) {
    SFTPFS_ASSIGN_OR_RETURN(s.language, r.string());
  }
  return s;
}

Result<NameReply> parse_names(Reader& r) {
  NameReply reply;
  SFTPFS_ASSIGN_OR_RETURN(const uint32_t n, r.count(kMinNameEntrySize));
  reply.names.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    NameEntry e;
    SFTPFS_ASSIGN_OR_RETURN(e.filename, r.string());
    SFTPFS_ASSIGN_OR_RETURN(e.longname, r.string());
    SFTPFS_ASSIGN_OR_RETURN(e.attrs, r.attrs());
    reply.names.push_back(std::move(e));
  }
  return reply;
}

Result<ReplyBody> parse_body(uint8_t type, Reader& r) {
  switch (type) {
    case SSH_FXP_STATUS: {
      SFTPFS_ASSIGN_OR_RETURN(StatusReply s, parse_status(r));
      return ReplyBody(std::move(s));
    }
    case SSH_FXP_HANDLE: {
      SFTPFS_ASSIGN_OR_RETURN(std::string handle, r.string());
      return ReplyBody(HandleReply{std::move(handle)});
    }
    case SSH_FXP_DATA: {
      SFTPFS_ASSIGN_OR_RETURN(const ByteView data, r.string_bytes());
      return ReplyBody(DataReply{data});
    }
    case SSH_FXP_NAME: {
      SFTPFS_ASSIGN_OR_RETURN(NameReply names, parse_names(r));
      return ReplyBody(std::move(names));
    }
    case SSH_FXP_ATTRS: {
      SFTPFS_ASSIGN_OR_RETURN(Attrs a, r.attrs());
      return ReplyBody(AttrsReply{std::move(a)});
    }
    case SSH_FXP_EXTENDED_REPLY:
      return ReplyBody(ExtendedReply{r.rest()});
    default:
      return Error::protocol_error("SFTP reply of unknown type " + std::to_string(type));
  }
}

bool is_reply_type(uint8_t type) {
  switch (type) {
    case SSH_FXP_STATUS: case SSH_FXP_HANDLE: case SSH_FXP_DATA: case SSH_FXP_NAME: case SSH_FXP_ATTRS:
    case SSH_FXP_EXTENDED_REPLY:
      return true;
    default:
      return false;
  }
}

// ---- errno ----

struct StatusInfo {
  uint32_t code;
  int err;
  const char* name;
};

// The one table from SSH_FX_* to errno and name. Codes above OP_UNSUPPORTED come from later drafts;
// v3 servers (OpenSSH included) never send them, others do.
constexpr StatusInfo kStatusTable[] = {
    {SSH_FX_OK, 0, "SSH_FX_OK"},
    // Callers turn EOF into end-of-file or end-of-directory; where it reaches errno it was unexpected.
    {SSH_FX_EOF, EIO, "SSH_FX_EOF"},
    {SSH_FX_NO_SUCH_FILE, ENOENT, "SSH_FX_NO_SUCH_FILE"},
    {SSH_FX_PERMISSION_DENIED, EACCES, "SSH_FX_PERMISSION_DENIED"},
    // v3's catch-all (OpenSSH sends it for EEXIST, ENOTEMPTY, ...): callers refine it when they can.
    {SSH_FX_FAILURE, EIO, "SSH_FX_FAILURE"},
    {SSH_FX_BAD_MESSAGE, EBADMSG, "SSH_FX_BAD_MESSAGE"},
    {SSH_FX_NO_CONNECTION, ENOTCONN, "SSH_FX_NO_CONNECTION"},
    {SSH_FX_CONNECTION_LOST, ECONNABORTED, "SSH_FX_CONNECTION_LOST"},
    {SSH_FX_OP_UNSUPPORTED, EOPNOTSUPP, "SSH_FX_OP_UNSUPPORTED"},
    {SSH_FX_INVALID_HANDLE, EBADF, "SSH_FX_INVALID_HANDLE"},
    {SSH_FX_NO_SUCH_PATH, ENOENT, "SSH_FX_NO_SUCH_PATH"},
    {SSH_FX_FILE_ALREADY_EXISTS, EEXIST, "SSH_FX_FILE_ALREADY_EXISTS"},
    {SSH_FX_WRITE_PROTECT, EACCES, "SSH_FX_WRITE_PROTECT"},
    {SSH_FX_NO_MEDIA, ENOMEDIUM, "SSH_FX_NO_MEDIA"},
    {SSH_FX_NO_SPACE_ON_FILESYSTEM, ENOSPC, "SSH_FX_NO_SPACE_ON_FILESYSTEM"},
    {SSH_FX_QUOTA_EXCEEDED, EDQUOT, "SSH_FX_QUOTA_EXCEEDED"},
    // Sent for an owner or group the server cannot map, as chown(2) answers an invalid id.
    {SSH_FX_UNKNOWN_PRINCIPAL, EINVAL, "SSH_FX_UNKNOWN_PRINCIPAL"},
    // Another client holds a conflicting (usually Windows share-mode) lock on the file.
    {SSH_FX_LOCK_CONFLICT, EBUSY, "SSH_FX_LOCK_CONFLICT"},
    {SSH_FX_DIR_NOT_EMPTY, ENOTEMPTY, "SSH_FX_DIR_NOT_EMPTY"},
    {SSH_FX_NOT_A_DIRECTORY, ENOTDIR, "SSH_FX_NOT_A_DIRECTORY"},
    {SSH_FX_INVALID_FILENAME, EINVAL, "SSH_FX_INVALID_FILENAME"},
    {SSH_FX_LINK_LOOP, ELOOP, "SSH_FX_LINK_LOOP"},
    {SSH_FX_CANNOT_DELETE, EPERM, "SSH_FX_CANNOT_DELETE"},
    {SSH_FX_INVALID_PARAMETER, EINVAL, "SSH_FX_INVALID_PARAMETER"},
    {SSH_FX_FILE_IS_A_DIRECTORY, EISDIR, "SSH_FX_FILE_IS_A_DIRECTORY"},
};

const StatusInfo* find_status(uint32_t code) {
  for (const StatusInfo& s : kStatusTable) {
    if (s.code == code) return &s;
  }
  return nullptr;
}

}  // namespace

// ---- attributes ----

void attrs_to_stat(const Attrs& attrs, struct stat& st) {
  if (attrs.has(SSH_FILEXFER_ATTR_SIZE)) {
    // off_t is signed; a size beyond it is nonsense from the server, so clamp rather than go negative.
    constexpr uint64_t kMaxOff = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
    const uint64_t size = attrs.size > kMaxOff ? kMaxOff : attrs.size;
    st.st_size = static_cast<off_t>(size);
    st.st_blocks = static_cast<blkcnt_t>(size / 512 + (size % 512 != 0 ? 1 : 0));
  }
  if (attrs.has(SSH_FILEXFER_ATTR_UIDGID)) {
    st.st_uid = attrs.uid;
    st.st_gid = attrs.gid;
  }
  if (attrs.has(SSH_FILEXFER_ATTR_PERMISSIONS)) {
    // A server that sends permission bits without the file type has not told us the type: keep ours.
    const mode_t type = (attrs.permissions & S_IFMT) != 0 ? (attrs.permissions & S_IFMT) : (st.st_mode & S_IFMT);
    st.st_mode = type | (attrs.permissions & 07777);
  }
  if (attrs.has(SSH_FILEXFER_ATTR_ACMODTIME)) {
    st.st_atim.tv_sec = static_cast<time_t>(attrs.atime);
    st.st_atim.tv_nsec = 0;
    st.st_mtim.tv_sec = static_cast<time_t>(attrs.mtime);
    st.st_mtim.tv_nsec = 0;
    // v3 carries no ctime; the modification time is the closest thing the server tells us.
    st.st_ctim = st.st_mtim;
  }
  st.st_blksize = 4096;
}

bool time_fits_v3(int64_t seconds) {
  return seconds >= 0 && seconds <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max());
}

// ---- replies ----

Result<uint32_t> reply_id(ByteView packet) {
  Reader r(packet);
  SFTPFS_ASSIGN_OR_RETURN(const uint8_t type, r.u8());
  if (!is_reply_type(type)) {
    return Error::protocol_error("SFTP packet of type " + std::to_string(type) + " is not a reply");
  }
  return r.u32();
}

Result<Reply> parse_reply(ByteView packet) {
  Reader r(packet);
  SFTPFS_ASSIGN_OR_RETURN(const uint8_t type, r.u8());
  if (!is_reply_type(type)) {
    return Error::protocol_error("SFTP reply of unknown type " + std::to_string(type));
  }
  Reply reply;
  SFTPFS_ASSIGN_OR_RETURN(reply.id, r.u32());
  SFTPFS_ASSIGN_OR_RETURN(reply.body, parse_body(type, r));
  SFTPFS_RETURN_IF_ERROR(r.expect_end("reply"));
  return reply;
}

Result<ServerVersion> parse_version(ByteView packet) {
  Reader r(packet);
  SFTPFS_ASSIGN_OR_RETURN(const uint8_t type, r.u8());
  if (type != SSH_FXP_VERSION) {
    return Error::protocol_error("expected SFTP VERSION, got packet type " + std::to_string(type));
  }
  ServerVersion v;
  SFTPFS_ASSIGN_OR_RETURN(v.version, r.u32());
  // Extension pairs run to the end of the packet. A repeated name keeps its first data.
  while (!r.at_end()) {
    SFTPFS_ASSIGN_OR_RETURN(std::string name, r.string());
    SFTPFS_ASSIGN_OR_RETURN(std::string data, r.string());
    v.extensions.emplace(std::move(name), std::move(data));
  }
  return v;
}

Result<Limits> parse_limits(ByteView payload) {
  Reader r(payload);
  Limits l;
  SFTPFS_ASSIGN_OR_RETURN(l.max_packet_length, r.u64());
  SFTPFS_ASSIGN_OR_RETURN(l.max_read_length, r.u64());
  SFTPFS_ASSIGN_OR_RETURN(l.max_write_length, r.u64());
  SFTPFS_ASSIGN_OR_RETURN(l.max_open_handles, r.u64());
  SFTPFS_RETURN_IF_ERROR(r.expect_end("limits reply"));
  return l;
}

Result<Statvfs> parse_statvfs(ByteView payload) {
  Reader r(payload);
  Statvfs s;
  for (uint64_t* field : {&s.bsize, &s.frsize, &s.blocks, &s.bfree, &s.bavail, &s.files, &s.ffree, &s.favail,
                          &s.fsid, &s.flag, &s.namemax}) {
    SFTPFS_ASSIGN_OR_RETURN(*field, r.u64());
  }
  SFTPFS_RETURN_IF_ERROR(r.expect_end("statvfs reply"));
  return s;
}

namespace {

// A string whose contents are themselves a run of strings (users-groups-by-id's name lists).
Result<std::vector<std::string>> parse_string_list(ByteView list) {
  Reader r(list);
  std::vector<std::string> names;
  while (!r.at_end()) {
    SFTPFS_ASSIGN_OR_RETURN(std::string name, r.string());
    names.push_back(std::move(name));
  }
  return names;
}

}  // namespace

Result<std::pair<std::vector<std::string>, std::vector<std::string>>> parse_users_groups(ByteView payload) {
  Reader r(payload);
  SFTPFS_ASSIGN_OR_RETURN(const ByteView user_list, r.string_bytes());
  SFTPFS_ASSIGN_OR_RETURN(const ByteView group_list, r.string_bytes());
  SFTPFS_RETURN_IF_ERROR(r.expect_end("users-groups-by-id reply"));
  SFTPFS_ASSIGN_OR_RETURN(std::vector<std::string> users, parse_string_list(user_list));
  SFTPFS_ASSIGN_OR_RETURN(std::vector<std::string> groups, parse_string_list(group_list));
  return std::make_pair(std::move(users), std::move(groups));
}

// ---- requests ----

Bytes build_init(uint32_t version) { return Writer(SSH_FXP_INIT, 4).u32(version).finish(); }

Bytes build_open(uint32_t id, std::string_view path, uint32_t pflags, const Attrs& attrs) {
  return request(SSH_FXP_OPEN, id, 4 + path.size() + 4 + 32).string(path).u32(pflags).attrs(attrs).finish();
}

Bytes build_close(uint32_t id, std::string_view handle) { return one_string(SSH_FXP_CLOSE, id, handle); }

Bytes build_read(uint32_t id, std::string_view handle, uint64_t offset, uint32_t length) {
  return request(SSH_FXP_READ, id, 4 + handle.size() + 12).string(handle).u64(offset).u32(length).finish();
}

Bytes build_write(uint32_t id, std::string_view handle, uint64_t offset, ByteView data) {
  return request(SSH_FXP_WRITE, id, 4 + handle.size() + 8 + 4 + data.size())
      .string(handle)
      .u64(offset)
      .string(data)
      .finish();
}

Bytes build_write_header(uint32_t id, std::string_view handle, uint64_t offset, uint32_t data_length) {
  Bytes header = request(SSH_FXP_WRITE, id, 4 + handle.size() + 8 + 4).string(handle).u64(offset).u32(data_length).finish();
  const uint64_t length = uint64_t(header.size()) - 4 + data_length;
  for (int i = 0; i < 4; ++i) header[i] = static_cast<uint8_t>(length >> (24 - 8 * i));
  return header;
}

Bytes build_lstat(uint32_t id, std::string_view path) { return one_string(SSH_FXP_LSTAT, id, path); }
Bytes build_fstat(uint32_t id, std::string_view handle) { return one_string(SSH_FXP_FSTAT, id, handle); }

Bytes build_setstat(uint32_t id, std::string_view path, const Attrs& attrs) {
  return request(SSH_FXP_SETSTAT, id, 4 + path.size() + 32).string(path).attrs(attrs).finish();
}

Bytes build_fsetstat(uint32_t id, std::string_view handle, const Attrs& attrs) {
  return request(SSH_FXP_FSETSTAT, id, 4 + handle.size() + 32).string(handle).attrs(attrs).finish();
}

Bytes build_opendir(uint32_t id, std::string_view path) { return one_string(SSH_FXP_OPENDIR, id, path); }
Bytes build_readdir(uint32_t id, std::string_view handle) { return one_string(SSH_FXP_READDIR, id, handle); }
Bytes build_remove(uint32_t id, std::string_view path) { return one_string(SSH_FXP_REMOVE, id, path); }

Bytes build_mkdir(uint32_t id, std::string_view path, const Attrs& attrs) {
  return request(SSH_FXP_MKDIR, id, 4 + path.size() + 32).string(path).attrs(attrs).finish();
}

Bytes build_rmdir(uint32_t id, std::string_view path) { return one_string(SSH_FXP_RMDIR, id, path); }
Bytes build_realpath(uint32_t id, std::string_view path) { return one_string(SSH_FXP_REALPATH, id, path); }
Bytes build_stat(uint32_t id, std::string_view path) { return one_string(SSH_FXP_STAT, id, path); }

Bytes build_rename(uint32_t id, std::string_view old_path, std::string_view new_path) {
  return two_strings(SSH_FXP_RENAME, id, old_path, new_path);
}

Bytes build_readlink(uint32_t id, std::string_view path) { return one_string(SSH_FXP_READLINK, id, path); }

Bytes build_symlink(uint32_t id, std::string_view target, std::string_view link_path, bool draft_order) {
  return draft_order ? two_strings(SSH_FXP_SYMLINK, id, link_path, target)
                     : two_strings(SSH_FXP_SYMLINK, id, target, link_path);
}

Bytes build_posix_rename(uint32_t id, std::string_view old_path, std::string_view new_path) {
  return extended(id, kExtPosixRename, 8 + old_path.size() + new_path.size()).string(old_path).string(new_path).finish();
}

Bytes build_statvfs(uint32_t id, std::string_view path) {
  return extended(id, kExtStatvfs, 4 + path.size()).string(path).finish();
}

Bytes build_fstatvfs(uint32_t id, std::string_view handle) {
  return extended(id, kExtFstatvfs, 4 + handle.size()).string(handle).finish();
}

Bytes build_hardlink(uint32_t id, std::string_view old_path, std::string_view new_path) {
  return extended(id, kExtHardlink, 8 + old_path.size() + new_path.size()).string(old_path).string(new_path).finish();
}

Bytes build_fsync(uint32_t id, std::string_view handle) {
  return extended(id, kExtFsync, 4 + handle.size()).string(handle).finish();
}

Bytes build_lsetstat(uint32_t id, std::string_view path, const Attrs& attrs) {
  return extended(id, kExtLsetstat, 4 + path.size() + 32).string(path).attrs(attrs).finish();
}

Bytes build_limits(uint32_t id) { return extended(id, kExtLimits, 0).finish(); }

Bytes build_expand_path(uint32_t id, std::string_view path) {
  return extended(id, kExtExpandPath, 4 + path.size()).string(path).finish();
}

Bytes build_copy_data(uint32_t id, std::string_view read_handle, uint64_t read_offset, uint64_t length,
                      std::string_view write_handle, uint64_t write_offset) {
  return extended(id, kExtCopyData, 4 + read_handle.size() + 16 + 4 + write_handle.size() + 8)
      .string(read_handle)
      .u64(read_offset)
      .u64(length)
      .string(write_handle)
      .u64(write_offset)
      .finish();
}

Bytes build_home_directory(uint32_t id, std::string_view username) {
  return extended(id, kExtHomeDirectory, 4 + username.size()).string(username).finish();
}

Bytes build_users_groups_by_id(uint32_t id, std::span<const uint32_t> uids, std::span<const uint32_t> gids) {
  // Each id list travels as one string whose contents are the uint32s back to back.
  return extended(id, kExtUsersGroupsById, 8 + 4 * (uids.size() + gids.size())).u32_list(uids).u32_list(gids).finish();
}

// ---- errno ----

int status_to_errno(uint32_t code) {
  const StatusInfo* s = find_status(code);
  return s != nullptr ? s->err : EIO;
}

const char* status_name(uint32_t code) {
  const StatusInfo* s = find_status(code);
  return s != nullptr ? s->name : "SSH_FX_UNKNOWN";
}

}  // namespace sftpfs::sftp
