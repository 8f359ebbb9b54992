#include "fs/attr_map.hpp"

#include <gtest/gtest.h>

#include <cerrno>

#include "fs/errno_edge.hpp"

namespace sftpfs::fs {
namespace {

sftp::Attrs current_attrs() {
  sftp::Attrs a;
  a.set_size(10).set_owner(1000, 1001).set_permissions(0100644).set_times(111, 222);
  return a;
}

TEST(Setattr, BothTimesNeedNothingCurrent) {
  SetattrRequest r;
  r.atime = {TimeSpec::Kind::value, 5};
  r.mtime = {TimeSpec::Kind::value, 6};
  EXPECT_FALSE(setattr_needs_current(r));
  auto a = build_setattr(r, std::nullopt, 1000, FsOptions{});
  ASSERT_TRUE(a);
  EXPECT_EQ(a->flags, static_cast<uint32_t>(sftp::SSH_FILEXFER_ATTR_ACMODTIME));
  EXPECT_EQ(a->atime, 5u);
  EXPECT_EQ(a->mtime, 6u);
}

TEST(Setattr, OmittedTimeKeepsCurrentValue) {
  SetattrRequest touch_a;  // touch -a: atime now, mtime omitted
  touch_a.atime.kind = TimeSpec::Kind::now;
  EXPECT_TRUE(setattr_needs_current(touch_a));
  auto a = build_setattr(touch_a, current_attrs(), 5000, FsOptions{});
  ASSERT_TRUE(a);
  EXPECT_EQ(a->atime, 5000u);
  EXPECT_EQ(a->mtime, 222u);

  SetattrRequest touch_m;  // touch -m -d: mtime given, atime omitted
  touch_m.mtime = {TimeSpec::Kind::value, 777};
  auto m = build_setattr(touch_m, current_attrs(), 5000, FsOptions{});
  ASSERT_TRUE(m);
  EXPECT_EQ(m->atime, 111u);
  EXPECT_EQ(m->mtime, 777u);
}

TEST(Setattr, MissingCurrentIsAnErrorNotAGuess) {
  SetattrRequest r;
  r.mtime.kind = TimeSpec::Kind::now;
  EXPECT_FALSE(build_setattr(r, std::nullopt, 1, FsOptions{}));
}

TEST(Setattr, TimesOutsideV3AreRefusedNotWrapped) {
  SetattrRequest before_1970;
  before_1970.atime = {TimeSpec::Kind::value, -315619200};  // 1960
  before_1970.mtime = {TimeSpec::Kind::value, 0};
  auto r = build_setattr(before_1970, std::nullopt, 1, FsOptions{});
  ASSERT_FALSE(r);
  EXPECT_EQ(errno_edge(r.error()), EOVERFLOW);

  SetattrRequest after_2106;
  after_2106.atime = {TimeSpec::Kind::value, 0};
  after_2106.mtime = {TimeSpec::Kind::value, int64_t{1} << 32};
  ASSERT_FALSE(build_setattr(after_2106, std::nullopt, 1, FsOptions{}));

  SetattrRequest edge;
  edge.atime = {TimeSpec::Kind::value, 0};
  edge.mtime = {TimeSpec::Kind::value, 0xffffffffLL};
  auto ok = build_setattr(edge, std::nullopt, 1, FsOptions{});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->mtime, 0xffffffffu);
}

TEST(Setattr, HalfAnOwnerIsCompleted) {
  SetattrRequest r;
  r.gid = 50;  // chgrp
  EXPECT_TRUE(setattr_needs_current(r));
  auto a = build_setattr(r, current_attrs(), 1, FsOptions{});
  ASSERT_TRUE(a);
  EXPECT_EQ(a->uid, 1000u);
  EXPECT_EQ(a->gid, 50u);
}

TEST(Setattr, ModeKeepsPermissionBitsOnly) {
  SetattrRequest r;
  r.mode = 0100755 | 04000;
  r.size = 0;
  auto a = build_setattr(r, std::nullopt, 1, FsOptions{});
  ASSERT_TRUE(a);
  EXPECT_EQ(a->permissions, 04755u);
  EXPECT_TRUE(a->has(sftp::SSH_FILEXFER_ATTR_SIZE));
  EXPECT_EQ(a->size, 0u);
}

TEST(Setattr, MergeKeepsFileType) {
  sftp::Attrs sent;
  sent.set_permissions(0600).set_times(1, 2);
  auto merged = merge_attrs(current_attrs(), sent);
  EXPECT_EQ(merged.permissions, 0100600u);
  EXPECT_EQ(merged.atime, 1u);
  EXPECT_EQ(merged.size, 10u);
}

TEST(KernelStat, OwnershipOptions) {
  FsOptions o;
  auto st = attrs_to_kernel_stat(current_attrs(), 7, 0, o);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_ino, 7u);
  EXPECT_EQ(st->st_nlink, 1u);  // unknown: 1
  EXPECT_EQ(st->st_uid, 1000u);
  EXPECT_EQ(st->st_mode, 0100644u);
  EXPECT_EQ(st->st_mtim.tv_sec, 222);

  o.idmap = IdMap::user;
  o.remote_uid = 1000;
  o.remote_gid = 1001;
  o.local_uid = 42;
  o.local_gid = 43;
  st = attrs_to_kernel_stat(current_attrs(), 7, 3, o);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_uid, 42u);
  EXPECT_EQ(st->st_gid, 43u);
  EXPECT_EQ(st->st_nlink, 3u);
  EXPECT_EQ(map_uid_out(42, o).value(), 1000u);
  EXPECT_EQ(map_uid_out(7, o).value(), 7u);

  FsOptions forced;
  forced.uid = 5;
  forced.gid = 6;
  forced.umask = 077;
  st = attrs_to_kernel_stat(current_attrs(), 7, 0, forced);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_uid, 5u);
  EXPECT_EQ(st->st_gid, 6u);
  EXPECT_EQ(st->st_mode, 0100600u);
}

TEST(KernelStat, IdmapFile) {
  FsOptions o;
  o.idmap = IdMap::file;
  o.uid_map = {{1000, 1}};
  o.gid_map = {{1001, 2}};
  auto st = attrs_to_kernel_stat(current_attrs(), 1, 0, o);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_uid, 1u);
  EXPECT_EQ(st->st_gid, 2u);
  EXPECT_EQ(map_uid_out(1, o).value(), 1000u);
  o.uid_map.clear();
  EXPECT_EQ(attrs_to_kernel_stat(current_attrs(), 1, 0, o)->st_uid, 1000u);  // nomap=ignore
  o.nomap_error = true;
  EXPECT_FALSE(attrs_to_kernel_stat(current_attrs(), 1, 0, o));
}

TEST(Longname, LinkCount) {
  EXPECT_EQ(longname_link_count("-rw-r--r--    2 root     root         1234 Jan  1 00:00 name"), 2u);
  EXPECT_EQ(longname_link_count("drwxr-xr-x   17 user group 4096 Jan  1 00:00 dir"), 17u);
  EXPECT_FALSE(longname_link_count(""));
  EXPECT_FALSE(longname_link_count("name"));
  EXPECT_FALSE(longname_link_count("-rw-r--r-- x root"));
  EXPECT_FALSE(longname_link_count("-rw-r--r--    99999999999 root"));  // does not fit
  EXPECT_FALSE(longname_link_count("-rw-r--r--    2"));                 // nothing after the count
  EXPECT_FALSE(longname_link_count("?rw-r--r--    2 a b"));
}

TEST(ErrnoEdge, Kinds) {
  EXPECT_EQ(errno_edge(Error::status(sftp::SSH_FX_NO_SUCH_FILE, "")), ENOENT);
  EXPECT_EQ(errno_edge(Error::status(sftp::SSH_FX_PERMISSION_DENIED, "")), EACCES);
  EXPECT_EQ(errno_edge(Error::status(sftp::SSH_FX_OK, "")), EIO);  // never 0 for an error
  EXPECT_EQ(errno_edge(Error::transport_error("")), ENOTCONN);
  EXPECT_EQ(errno_edge(Error::timed_out("")), ETIMEDOUT);
  EXPECT_EQ(errno_edge(Error::protocol_error("")), EIO);
  EXPECT_EQ(errno_edge(Error::errno_error(ENAMETOOLONG, "")), ENAMETOOLONG);
  EXPECT_EQ(errno_edge(Error::errno_error(0, "")), EIO);
  EXPECT_EQ(errno_edge(Error::not_supported("")), EOPNOTSUPP);
}

}  // namespace
}  // namespace sftpfs::fs
