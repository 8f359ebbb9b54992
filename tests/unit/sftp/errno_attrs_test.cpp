// The SSH_FX_* -> errno table, ATTRS -> struct stat, and the v3 time range.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <string>

#include "sftp/protocol.hpp"

namespace sftpfs::sftp {
namespace {

TEST(StatusToErrno, EveryKnownCode) {
  const std::pair<uint32_t, int> expected[] = {
      {SSH_FX_OK, 0},
      {SSH_FX_EOF, EIO},
      {SSH_FX_NO_SUCH_FILE, ENOENT},
      {SSH_FX_PERMISSION_DENIED, EACCES},
      {SSH_FX_FAILURE, EIO},
      {SSH_FX_BAD_MESSAGE, EBADMSG},
      {SSH_FX_NO_CONNECTION, ENOTCONN},
      {SSH_FX_CONNECTION_LOST, ECONNABORTED},
      {SSH_FX_OP_UNSUPPORTED, EOPNOTSUPP},
      {SSH_FX_INVALID_HANDLE, EBADF},
      {SSH_FX_NO_SUCH_PATH, ENOENT},
      {SSH_FX_FILE_ALREADY_EXISTS, EEXIST},
      {SSH_FX_WRITE_PROTECT, EACCES},
      {SSH_FX_NO_MEDIA, ENOMEDIUM},
      {SSH_FX_NO_SPACE_ON_FILESYSTEM, ENOSPC},
      {SSH_FX_QUOTA_EXCEEDED, EDQUOT},
      {SSH_FX_UNKNOWN_PRINCIPAL, EINVAL},
      {SSH_FX_LOCK_CONFLICT, EBUSY},
      {SSH_FX_DIR_NOT_EMPTY, ENOTEMPTY},
      {SSH_FX_NOT_A_DIRECTORY, ENOTDIR},
      {SSH_FX_INVALID_FILENAME, EINVAL},
      {SSH_FX_LINK_LOOP, ELOOP},
      {SSH_FX_CANNOT_DELETE, EPERM},
      {SSH_FX_INVALID_PARAMETER, EINVAL},
      {SSH_FX_FILE_IS_A_DIRECTORY, EISDIR},
  };
  for (const auto& [code, err] : expected) {
    EXPECT_EQ(status_to_errno(code), err) << status_name(code);
  }
}

TEST(StatusToErrno, UnknownCodesAreEio) {
  for (uint32_t code : {25u, 26u, 100u, 0x80000000u, 0xFFFFFFFFu}) EXPECT_EQ(status_to_errno(code), EIO) << code;
}

TEST(StatusToErrno, EveryFailureCodeIsAnErrnoNeverSuccess) {
  for (uint32_t code = 1; code <= 30; ++code) EXPECT_GT(status_to_errno(code), 0) << code;
}

TEST(StatusName, DistinctNamesForKnownCodes) {
  std::set<std::string> names;
  for (uint32_t code = SSH_FX_OK; code <= SSH_FX_FILE_IS_A_DIRECTORY; ++code) {
    const std::string name = status_name(code);
    EXPECT_EQ(name.rfind("SSH_FX_", 0), 0u) << code;
    EXPECT_NE(name, "SSH_FX_UNKNOWN") << code;
    names.insert(name);
  }
  EXPECT_EQ(names.size(), size_t(SSH_FX_FILE_IS_A_DIRECTORY) + 1);
  EXPECT_STREQ(status_name(SSH_FX_NO_SUCH_FILE), "SSH_FX_NO_SUCH_FILE");
  EXPECT_STREQ(status_name(999), "SSH_FX_UNKNOWN");
}

struct stat sentinel_stat() {
  struct stat st;
  std::memset(&st, 0, sizeof st);
  st.st_mode = S_IFLNK | 0777;
  st.st_size = 77;
  st.st_blocks = 9;
  st.st_uid = 55;
  st.st_gid = 66;
  st.st_nlink = 3;
  st.st_ino = 12345;
  st.st_atim.tv_sec = 1;
  st.st_atim.tv_nsec = 11;
  st.st_mtim.tv_sec = 2;
  st.st_mtim.tv_nsec = 22;
  st.st_ctim.tv_sec = 3;
  st.st_ctim.tv_nsec = 33;
  return st;
}

TEST(AttrsToStat, AllFields) {
  Attrs a;
  a.set_size(4097).set_owner(1000, 100).set_permissions(S_IFREG | 04755).set_times(1600000000, 1700000000);
  struct stat st = sentinel_stat();
  attrs_to_stat(a, st);
  EXPECT_EQ(st.st_mode, mode_t(S_IFREG | 04755));
  EXPECT_EQ(st.st_size, 4097);
  EXPECT_EQ(st.st_blocks, 9);  // 512-byte units, rounded up
  EXPECT_EQ(st.st_blksize, 4096);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 100u);
  EXPECT_EQ(st.st_atim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_atim.tv_nsec, 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 0);
  EXPECT_EQ(st.st_ctim.tv_sec, 1700000000);  // v3 has no ctime
  EXPECT_EQ(st.st_ctim.tv_nsec, 0);
  EXPECT_EQ(st.st_nlink, 3u);       // not carried by v3
  EXPECT_EQ(st.st_ino, 12345u);     // not carried by v3
}

TEST(AttrsToStat, FieldsNotCarriedStayAsTheyWere) {
  struct stat st = sentinel_stat();
  attrs_to_stat(Attrs{}, st);
  const struct stat before = sentinel_stat();
  EXPECT_EQ(st.st_mode, before.st_mode);
  EXPECT_EQ(st.st_size, before.st_size);
  EXPECT_EQ(st.st_blocks, before.st_blocks);
  EXPECT_EQ(st.st_uid, before.st_uid);
  EXPECT_EQ(st.st_gid, before.st_gid);
  EXPECT_EQ(st.st_atim.tv_nsec, before.st_atim.tv_nsec);
  EXPECT_EQ(st.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(st.st_ctim.tv_sec, before.st_ctim.tv_sec);

  st = sentinel_stat();
  attrs_to_stat(Attrs().set_size(0), st);
  EXPECT_EQ(st.st_size, 0);
  EXPECT_EQ(st.st_blocks, 0);
  EXPECT_EQ(st.st_uid, before.st_uid);
  EXPECT_EQ(st.st_mode, before.st_mode);
}

TEST(AttrsToStat, FileTypeBitsFromTheServer) {
  for (mode_t type : {S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK}) {
    struct stat st = sentinel_stat();
    attrs_to_stat(Attrs().set_permissions(type | 0640), st);
    EXPECT_EQ(st.st_mode & S_IFMT, type);
    EXPECT_EQ(st.st_mode & 07777, 0640u);
  }
}

TEST(AttrsToStat, PermissionsWithoutTypeKeepTheKnownType) {
  struct stat st = sentinel_stat();  // a symlink
  attrs_to_stat(Attrs().set_permissions(0600), st);
  EXPECT_EQ(st.st_mode, mode_t(S_IFLNK | 0600));
}

TEST(AttrsToStat, BlocksRoundUp) {
  const std::pair<uint64_t, blkcnt_t> cases[] = {{0, 0}, {1, 1}, {511, 1}, {512, 1}, {513, 2}, {1ULL << 40, (1LL << 40) / 512}};
  for (const auto& [size, blocks] : cases) {
    struct stat st = sentinel_stat();
    attrs_to_stat(Attrs().set_size(size), st);
    EXPECT_EQ(st.st_blocks, blocks) << size;
  }
}

TEST(AttrsToStat, SizeBeyondOffTIsClampedNotNegative) {
  struct stat st = sentinel_stat();
  attrs_to_stat(Attrs().set_size(std::numeric_limits<uint64_t>::max()), st);
  EXPECT_EQ(st.st_size, std::numeric_limits<off_t>::max());
  EXPECT_GT(st.st_blocks, 0);
}

TEST(AttrsToStat, TimesAboveInt32AreUnsigned) {
  struct stat st = sentinel_stat();
  attrs_to_stat(Attrs().set_times(0xFFFFFFFF, 0x80000000), st);
  EXPECT_EQ(st.st_atim.tv_sec, time_t(0xFFFFFFFFLL));
  EXPECT_EQ(st.st_mtim.tv_sec, time_t(0x80000000LL));
}

TEST(TimeFitsV3, Range) {
  EXPECT_TRUE(time_fits_v3(0));
  EXPECT_TRUE(time_fits_v3(1700000000));
  EXPECT_TRUE(time_fits_v3(0xFFFFFFFFLL));
  EXPECT_FALSE(time_fits_v3(0x100000000LL));
  EXPECT_FALSE(time_fits_v3(-1));
  EXPECT_FALSE(time_fits_v3(std::numeric_limits<int64_t>::min()));
  EXPECT_FALSE(time_fits_v3(std::numeric_limits<int64_t>::max()));
}

}  // namespace
}  // namespace sftpfs::sftp
