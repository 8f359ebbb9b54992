// SFTP version 3 (draft-ietf-secsh-filexfer-02) plus OpenSSH's extensions, as bytes.
// Pure code: no I/O, no FUSE, no libssh2. Every parser checks every length it reads; a malformed
// packet is a Result error, never a crash or an out-of-bounds read.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "util/result.hpp"

namespace sftpfs::sftp {

// Leaves new elements uninitialised on resize: a buffer about to be filled by a READ reply or a
// socket read is not zeroed first (that memset was ~7 % of the daemon's CPU on sequential reads).
template <class T>
struct NoInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() noexcept = default;
  template <class U>
  NoInitAllocator(const NoInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialised: no zeroing for bytes
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using Bytes = std::vector<uint8_t, NoInitAllocator<uint8_t>>;
using ByteView = std::span<const uint8_t>;

inline constexpr uint32_t kVersion = 3;
// Largest packet we accept from a server (length field excluded). OpenSSH's limit is 256 KiB; a little
// slack lets a DATA reply of max read size plus headers through.
inline constexpr uint32_t kMaxIncomingPacket = 256 * 1024 + 1024;

enum PacketType : uint8_t {
  SSH_FXP_INIT = 1, SSH_FXP_VERSION = 2, SSH_FXP_OPEN = 3, SSH_FXP_CLOSE = 4, SSH_FXP_READ = 5,
  SSH_FXP_WRITE = 6, SSH_FXP_LSTAT = 7, SSH_FXP_FSTAT = 8, SSH_FXP_SETSTAT = 9, SSH_FXP_FSETSTAT = 10,
  SSH_FXP_OPENDIR = 11, SSH_FXP_READDIR = 12, SSH_FXP_REMOVE = 13, SSH_FXP_MKDIR = 14, SSH_FXP_RMDIR = 15,
  SSH_FXP_REALPATH = 16, SSH_FXP_STAT = 17, SSH_FXP_RENAME = 18, SSH_FXP_READLINK = 19,
  SSH_FXP_SYMLINK = 20, SSH_FXP_STATUS = 101, SSH_FXP_HANDLE = 102, SSH_FXP_DATA = 103,
  SSH_FXP_NAME = 104, SSH_FXP_ATTRS = 105, SSH_FXP_EXTENDED = 200, SSH_FXP_EXTENDED_REPLY = 201,
};

enum StatusCode : uint32_t {
  SSH_FX_OK = 0, SSH_FX_EOF = 1, SSH_FX_NO_SUCH_FILE = 2, SSH_FX_PERMISSION_DENIED = 3,
  SSH_FX_FAILURE = 4, SSH_FX_BAD_MESSAGE = 5, SSH_FX_NO_CONNECTION = 6, SSH_FX_CONNECTION_LOST = 7,
  SSH_FX_OP_UNSUPPORTED = 8,
  // Codes from later drafts that some v3 servers still send.
  SSH_FX_INVALID_HANDLE = 9, SSH_FX_NO_SUCH_PATH = 10, SSH_FX_FILE_ALREADY_EXISTS = 11,
  SSH_FX_WRITE_PROTECT = 12, SSH_FX_NO_MEDIA = 13, SSH_FX_NO_SPACE_ON_FILESYSTEM = 14,
  SSH_FX_QUOTA_EXCEEDED = 15, SSH_FX_UNKNOWN_PRINCIPAL = 16, SSH_FX_LOCK_CONFLICT = 17,
  SSH_FX_DIR_NOT_EMPTY = 18, SSH_FX_NOT_A_DIRECTORY = 19, SSH_FX_INVALID_FILENAME = 20,
  SSH_FX_LINK_LOOP = 21, SSH_FX_CANNOT_DELETE = 22, SSH_FX_INVALID_PARAMETER = 23,
  SSH_FX_FILE_IS_A_DIRECTORY = 24,
};

enum AttrFlags : uint32_t {
  SSH_FILEXFER_ATTR_SIZE = 0x1, SSH_FILEXFER_ATTR_UIDGID = 0x2, SSH_FILEXFER_ATTR_PERMISSIONS = 0x4,
  SSH_FILEXFER_ATTR_ACMODTIME = 0x8, SSH_FILEXFER_ATTR_EXTENDED = 0x80000000,
};

enum OpenFlags : uint32_t {
  SSH_FXF_READ = 0x1, SSH_FXF_WRITE = 0x2, SSH_FXF_APPEND = 0x4, SSH_FXF_CREAT = 0x8,
  SSH_FXF_TRUNC = 0x10, SSH_FXF_EXCL = 0x20,
};

// File attributes as SFTP v3 carries them. Each field is meaningful only when its flag is set.
struct Attrs {
  uint32_t flags = 0;
  uint64_t size = 0;
  uint32_t uid = 0, gid = 0;
  uint32_t permissions = 0;  // includes the S_IFMT file type bits
  uint32_t atime = 0, mtime = 0;
  std::vector<std::pair<std::string, std::string>> extended;

  bool has(uint32_t f) const { return (flags & f) != 0; }
  Attrs& set_size(uint64_t s) { flags |= SSH_FILEXFER_ATTR_SIZE; size = s; return *this; }
  Attrs& set_owner(uint32_t u, uint32_t g) { flags |= SSH_FILEXFER_ATTR_UIDGID; uid = u; gid = g; return *this; }
  Attrs& set_permissions(uint32_t p) { flags |= SSH_FILEXFER_ATTR_PERMISSIONS; permissions = p; return *this; }
  Attrs& set_times(uint32_t a, uint32_t m) { flags |= SSH_FILEXFER_ATTR_ACMODTIME; atime = a; mtime = m; return *this; }
  bool operator==(const Attrs&) const = default;
};

// Fills st from attrs (fields not carried are left as they were in st). st_nlink is not in v3.
void attrs_to_stat(const Attrs& attrs, struct stat& st);
// The SFTP v3 time field is an unsigned 32-bit count of seconds: times outside it cannot be carried.
bool time_fits_v3(int64_t seconds);

// ---- replies ----
struct StatusReply { uint32_t code = 0; std::string message; std::string language; };
struct HandleReply { std::string handle; };
struct DataReply { ByteView data; };  // points into the packet passed to parse_reply
struct NameEntry { std::string filename; std::string longname; Attrs attrs; };
struct NameReply { std::vector<NameEntry> names; };
struct AttrsReply { Attrs attrs; };
struct ExtendedReply { ByteView payload; };  // the bytes after the id; see the parse_* helpers below

using ReplyBody = std::variant<StatusReply, HandleReply, DataReply, NameReply, AttrsReply, ExtendedReply>;
struct Reply {
  uint32_t id = 0;
  ReplyBody body;
};

// Peeks at the request id of a reply packet (packet = type byte onward, no length prefix).
Result<uint32_t> reply_id(ByteView packet);
// Parses a whole reply packet (type byte onward). Trailing bytes after a well-formed reply are an error.
Result<Reply> parse_reply(ByteView packet);

// ---- VERSION and extensions ----
struct Limits {
  uint64_t max_packet_length = 0, max_read_length = 0, max_write_length = 0, max_open_handles = 0;
};
struct Statvfs {
  uint64_t bsize = 0, frsize = 0, blocks = 0, bfree = 0, bavail = 0, files = 0, ffree = 0, favail = 0;
  uint64_t fsid = 0, flag = 0, namemax = 0;
};
struct ServerVersion {
  uint32_t version = 0;
  std::map<std::string, std::string> extensions;  // name -> data
  bool has(std::string_view name) const { return extensions.count(std::string(name)) != 0; }
};

Result<ServerVersion> parse_version(ByteView packet);  // SSH_FXP_VERSION, type byte onward
Result<Limits> parse_limits(ByteView extended_reply_payload);
Result<Statvfs> parse_statvfs(ByteView extended_reply_payload);
// users-groups-by-id@openssh.com reply: names in request order (empty string = unknown)
Result<std::pair<std::vector<std::string>, std::vector<std::string>>> parse_users_groups(ByteView payload);

// Extension names.
inline constexpr std::string_view kExtPosixRename = "posix-rename@openssh.com";
inline constexpr std::string_view kExtStatvfs = "statvfs@openssh.com";
inline constexpr std::string_view kExtFstatvfs = "fstatvfs@openssh.com";
inline constexpr std::string_view kExtHardlink = "hardlink@openssh.com";
inline constexpr std::string_view kExtFsync = "fsync@openssh.com";
inline constexpr std::string_view kExtLsetstat = "lsetstat@openssh.com";
inline constexpr std::string_view kExtLimits = "limits@openssh.com";
inline constexpr std::string_view kExtExpandPath = "expand-path@openssh.com";
inline constexpr std::string_view kExtCopyData = "copy-data";
inline constexpr std::string_view kExtHomeDirectory = "home-directory";
inline constexpr std::string_view kExtUsersGroupsById = "users-groups-by-id@openssh.com";

// ---- requests ----
// Every builder returns a whole packet: uint32 length, type byte, uint32 id, body. The id is written as
// given; a Connection overwrites bytes [5, 9) with the id it assigns (see kIdOffset).
inline constexpr size_t kIdOffset = 5;

Bytes build_init(uint32_t version = kVersion);
Bytes build_open(uint32_t id, std::string_view path, uint32_t pflags, const Attrs& attrs);
Bytes build_close(uint32_t id, std::string_view handle);
Bytes build_read(uint32_t id, std::string_view handle, uint64_t offset, uint32_t length);
Bytes build_write(uint32_t id, std::string_view handle, uint64_t offset, ByteView data);
// A WRITE without its data: the length field counts `data_length` bytes that the sender sends right
// behind these from where they already are (Connection::submit's payload), so they are not copied.
Bytes build_write_header(uint32_t id, std::string_view handle, uint64_t offset, uint32_t data_length);
Bytes build_lstat(uint32_t id, std::string_view path);
Bytes build_fstat(uint32_t id, std::string_view handle);
Bytes build_setstat(uint32_t id, std::string_view path, const Attrs& attrs);
Bytes build_fsetstat(uint32_t id, std::string_view handle, const Attrs& attrs);
Bytes build_opendir(uint32_t id, std::string_view path);
Bytes build_readdir(uint32_t id, std::string_view handle);
Bytes build_remove(uint32_t id, std::string_view path);
Bytes build_mkdir(uint32_t id, std::string_view path, const Attrs& attrs);
Bytes build_rmdir(uint32_t id, std::string_view path);
Bytes build_realpath(uint32_t id, std::string_view path);
Bytes build_stat(uint32_t id, std::string_view path);
Bytes build_rename(uint32_t id, std::string_view old_path, std::string_view new_path);
Bytes build_readlink(uint32_t id, std::string_view path);
// OpenSSH's order, which reverses the draft: target (what the link points to) first, then the link's path.
// `draft_order` = true sends the draft's order (linkpath, targetpath) for servers that say so.
Bytes build_symlink(uint32_t id, std::string_view target, std::string_view link_path, bool draft_order = false);
// Extensions (SSH_FXP_EXTENDED)
Bytes build_posix_rename(uint32_t id, std::string_view old_path, std::string_view new_path);
Bytes build_statvfs(uint32_t id, std::string_view path);
Bytes build_fstatvfs(uint32_t id, std::string_view handle);
Bytes build_hardlink(uint32_t id, std::string_view old_path, std::string_view new_path);
Bytes build_fsync(uint32_t id, std::string_view handle);
Bytes build_lsetstat(uint32_t id, std::string_view path, const Attrs& attrs);
Bytes build_limits(uint32_t id);
Bytes build_expand_path(uint32_t id, std::string_view path);
Bytes build_copy_data(uint32_t id, std::string_view read_handle, uint64_t read_offset, uint64_t length,
                      std::string_view write_handle, uint64_t write_offset);
Bytes build_home_directory(uint32_t id, std::string_view username);
Bytes build_users_groups_by_id(uint32_t id, std::span<const uint32_t> uids, std::span<const uint32_t> gids);

// ---- errno ----
// The one table from SSH_FX_* to errno. Unknown codes become EIO.
int status_to_errno(uint32_t code);
const char* status_name(uint32_t code);

}  // namespace sftpfs::sftp
