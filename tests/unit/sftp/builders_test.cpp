// Every request builder against bytes assembled by hand (wire_bytes.hpp) or written out literally.
#include <gtest/gtest.h>

#include <array>
#include <functional>

#include "sftp/protocol.hpp"
#include "sftp/wire.hpp"
#include "wire_bytes.hpp"

namespace sftpfs::sftp {
namespace {

using testing::Bytes8;

Bytes8 req(uint8_t type, uint32_t id) { return std::move(Bytes8().u8(type).u32(id)); }
Bytes8 ext(uint32_t id, std::string_view name) { return std::move(req(SSH_FXP_EXTENDED, id).str(name)); }

Attrs full_attrs() {
  Attrs a;
  a.set_size(0x0102030405060708ULL).set_owner(1000, 1001).set_permissions(0100644).set_times(1700000000, 1700000001);
  a.flags |= SSH_FILEXFER_ATTR_EXTENDED;
  a.extended = {{"k1@x", "v1"}, {"k2@x", ""}};
  return a;
}

Bytes8& put_full_attrs(Bytes8& b) {
  return b.u32(0x8000000F)
      .u64(0x0102030405060708ULL)
      .u32(1000).u32(1001)
      .u32(0100644)
      .u32(1700000000).u32(1700000001)
      .u32(2).str("k1@x").str("v1").str("k2@x").str("");
}

TEST(Builders, InitIsLiteralBytesWithoutId) {
  EXPECT_EQ(build_init(), (Bytes{0, 0, 0, 5, 1, 0, 0, 0, 3}));
  EXPECT_EQ(build_init(6), (Bytes{0, 0, 0, 5, 1, 0, 0, 0, 6}));
}

TEST(Builders, CloseIsLiteralBytes) {
  EXPECT_EQ(build_close(0x01020304, "h\x01"),
            (Bytes{0, 0, 0, 11, SSH_FXP_CLOSE, 1, 2, 3, 4, 0, 0, 0, 2, 'h', 1}));
}

TEST(Builders, ReadIsLiteralBytes) {
  EXPECT_EQ(build_read(7, "H", 0x1122334455667788ULL, 0x8000),
            (Bytes{0, 0, 0, 22, SSH_FXP_READ, 0, 0, 0, 7, 0, 0, 0, 1, 'H',
                   0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0, 0x80, 0}));
}

TEST(Builders, OpenCarriesPathFlagsAndAttrs) {
  Attrs a;
  a.set_permissions(0600);
  EXPECT_EQ(build_open(9, "/tmp/f", SSH_FXF_WRITE | SSH_FXF_CREAT | SSH_FXF_EXCL, a),
            req(SSH_FXP_OPEN, 9).str("/tmp/f").u32(0x2A).u32(SSH_FILEXFER_ATTR_PERMISSIONS).u32(0600).framed());
  EXPECT_EQ(build_open(9, "f", SSH_FXF_READ, Attrs{}), req(SSH_FXP_OPEN, 9).str("f").u32(1).u32(0).framed());
}

TEST(Builders, AttrsEncodeEveryFieldInDraftOrder) {
  Bytes8 expected = req(SSH_FXP_SETSTAT, 3).str("p");
  put_full_attrs(expected);
  EXPECT_EQ(build_setstat(3, "p", full_attrs()), expected.framed());
}

TEST(Builders, AttrsSendOnlyFlagsWeKnowSoTheLayoutMatches) {
  Attrs a;
  a.set_size(5);
  a.flags |= 0x00000100;  // not a v3 flag: must not reach the wire without its (unknown) field
  EXPECT_EQ(build_fsetstat(1, "h", a), req(SSH_FXP_FSETSTAT, 1).str("h").u32(1).u64(5).framed());
}

TEST(Builders, ExtendedVectorIgnoredWithoutItsFlag) {
  Attrs a;
  a.extended = {{"a", "b"}};
  EXPECT_EQ(build_mkdir(2, "d", a), req(SSH_FXP_MKDIR, 2).str("d").u32(0).framed());
  a.flags = SSH_FILEXFER_ATTR_EXTENDED;
  EXPECT_EQ(build_mkdir(2, "d", a), req(SSH_FXP_MKDIR, 2).str("d").u32(0x80000000).u32(1).str("a").str("b").framed());
}

TEST(Builders, WriteCarriesDataAsString) {
  const Bytes data{0, 1, 2, 0xFF};
  EXPECT_EQ(build_write(4, "hh", 100, ByteView(data)),
            req(SSH_FXP_WRITE, 4).str("hh").u64(100).str(std::string_view("\0\1\2\xFF", 4)).framed());
  EXPECT_EQ(build_write(4, "hh", 0, ByteView()), req(SSH_FXP_WRITE, 4).str("hh").u64(0).u32(0).framed());
}

TEST(Builders, WriteHeaderFollowedByItsDataIsTheWholeWrite) {
  const Bytes data{0, 1, 2, 0xFF, 7};
  Bytes joined = build_write_header(4, "hh", 100, uint32_t(data.size()));
  joined.insert(joined.end(), data.begin(), data.end());
  EXPECT_EQ(joined, build_write(4, "hh", 100, ByteView(data)));
}

TEST(Builders, SingleStringRequests) {
  struct Case {
    std::function<Bytes(uint32_t, std::string_view)> build;
    uint8_t type;
  };
  const Case cases[] = {
      {build_close, SSH_FXP_CLOSE},     {build_lstat, SSH_FXP_LSTAT},       {build_fstat, SSH_FXP_FSTAT},
      {build_opendir, SSH_FXP_OPENDIR}, {build_readdir, SSH_FXP_READDIR},   {build_remove, SSH_FXP_REMOVE},
      {build_rmdir, SSH_FXP_RMDIR},     {build_realpath, SSH_FXP_REALPATH}, {build_stat, SSH_FXP_STAT},
      {build_readlink, SSH_FXP_READLINK},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(int(c.type));
    EXPECT_EQ(c.build(0xDEADBEEF, "/a/b c"), req(c.type, 0xDEADBEEF).str("/a/b c").framed());
    EXPECT_EQ(c.build(1, ""), req(c.type, 1).str("").framed());
  }
}

TEST(Builders, RenameOldThenNew) {
  EXPECT_EQ(build_rename(5, "old", "new"), req(SSH_FXP_RENAME, 5).str("old").str("new").framed());
}

TEST(Builders, SymlinkOpenSshOrderIsTargetThenLink) {
  EXPECT_EQ(build_symlink(6, "target", "link"), req(SSH_FXP_SYMLINK, 6).str("target").str("link").framed());
  EXPECT_EQ(build_symlink(6, "target", "link", /*draft_order=*/true),
            req(SSH_FXP_SYMLINK, 6).str("link").str("target").framed());
}

TEST(Builders, ExtensionsFollowOpenSshProtocolFile) {
  EXPECT_EQ(build_posix_rename(1, "a", "b"), ext(1, "posix-rename@openssh.com").str("a").str("b").framed());
  EXPECT_EQ(build_statvfs(2, "/"), ext(2, "statvfs@openssh.com").str("/").framed());
  EXPECT_EQ(build_fstatvfs(3, "H"), ext(3, "fstatvfs@openssh.com").str("H").framed());
  EXPECT_EQ(build_hardlink(4, "a", "b"), ext(4, "hardlink@openssh.com").str("a").str("b").framed());
  EXPECT_EQ(build_fsync(5, "H"), ext(5, "fsync@openssh.com").str("H").framed());
  Bytes8 lsetstat = ext(6, "lsetstat@openssh.com").str("p");
  put_full_attrs(lsetstat);
  EXPECT_EQ(build_lsetstat(6, "p", full_attrs()), lsetstat.framed());
  EXPECT_EQ(build_limits(7), ext(7, "limits@openssh.com").framed());
  EXPECT_EQ(build_expand_path(8, "~/x"), ext(8, "expand-path@openssh.com").str("~/x").framed());
  EXPECT_EQ(build_copy_data(9, "R", 10, 20, "W", 30),
            ext(9, "copy-data").str("R").u64(10).u64(20).str("W").u64(30).framed());
  EXPECT_EQ(build_home_directory(10, "alice"), ext(10, "home-directory").str("alice").framed());
}

TEST(Builders, UsersGroupsByIdSendsTwoStringEncodedUint32Arrays) {
  const std::array<uint32_t, 2> uids{0, 1000};
  const std::array<uint32_t, 1> gids{0x01020304};
  EXPECT_EQ(build_users_groups_by_id(11, uids, gids),
            ext(11, "users-groups-by-id@openssh.com").u32(8).u32(0).u32(1000).u32(4).u32(0x01020304).framed());
  EXPECT_EQ(build_users_groups_by_id(11, {}, {}), ext(11, "users-groups-by-id@openssh.com").u32(0).u32(0).framed());
}

// Every builder's packet: length field = bytes after it, id at kIdOffset, and a Reader can walk it.
TEST(Builders, EveryPacketHasConsistentLengthAndIdAtKIdOffset) {
  const Bytes data{1, 2, 3};
  const std::array<uint32_t, 1> ids{42};
  const uint32_t id = 0xA1B2C3D4;
  const std::vector<Bytes> packets = {
      build_open(id, "p", 1, full_attrs()), build_close(id, "h"), build_read(id, "h", 1, 2),
      build_write(id, "h", 1, ByteView(data)), build_lstat(id, "p"), build_fstat(id, "h"),
      build_setstat(id, "p", full_attrs()), build_fsetstat(id, "h", full_attrs()), build_opendir(id, "p"),
      build_readdir(id, "h"), build_remove(id, "p"), build_mkdir(id, "p", Attrs{}), build_rmdir(id, "p"),
      build_realpath(id, "p"), build_stat(id, "p"), build_rename(id, "a", "b"), build_readlink(id, "p"),
      build_symlink(id, "a", "b"), build_posix_rename(id, "a", "b"), build_statvfs(id, "p"),
      build_fstatvfs(id, "h"), build_hardlink(id, "a", "b"), build_fsync(id, "h"),
      build_lsetstat(id, "p", full_attrs()), build_limits(id), build_expand_path(id, "p"),
      build_copy_data(id, "a", 1, 2, "b", 3), build_home_directory(id, "u"), build_users_groups_by_id(id, ids, ids),
  };
  for (const Bytes& p : packets) {
    ASSERT_GE(p.size(), 9u);
    Reader r{ByteView(p)};
    EXPECT_EQ(r.u32().value(), p.size() - 4);
    const uint8_t type = r.u8().value();
    EXPECT_TRUE((type >= SSH_FXP_OPEN && type <= SSH_FXP_SYMLINK) || type == SSH_FXP_EXTENDED) << int(type);
    EXPECT_EQ(Reader(ByteView(p).subspan(kIdOffset)).u32().value(), id);
  }
}

// Decoding what we encode gives back the same attributes, for every combination of flags.
TEST(Builders, AttrsRoundTripThroughReader) {
  for (uint32_t combo = 0; combo < 32; ++combo) {
    Attrs a;
    if (combo & 1) a.set_size(0xFFFFFFFFFFFFFFFFULL - combo);
    if (combo & 2) a.set_owner(combo, ~combo);
    if (combo & 4) a.set_permissions(040755);
    if (combo & 8) a.set_times(0xFFFFFFFF, combo);
    if (combo & 16) {
      a.flags |= SSH_FILEXFER_ATTR_EXTENDED;
      a.extended = {{"x", std::string("\0y", 2)}};
    }
    Writer w(SSH_FXP_ATTRS);
    w.attrs(a);
    const Bytes packet = w.finish();
    Reader r(ByteView(packet).subspan(5));
    auto decoded = r.attrs();
    ASSERT_TRUE(decoded) << decoded.error().message;
    EXPECT_EQ(*decoded, a) << combo;
    EXPECT_TRUE(r.at_end());
  }
}

}  // namespace
}  // namespace sftpfs::sftp
