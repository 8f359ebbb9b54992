// mount(8)'s arguments to mount.sftpfs, as libmount 2.38 passes them (seen with a recording helper).
#include "mount-helper/mount_request.hpp"

#include <gtest/gtest.h>

namespace sftpfs::mount_helper {
namespace {

using Args = std::vector<std::string>;

MountRequest parse(const Args& args, std::string_view program = "mount.sftpfs") {
  auto request = parse_mount_arguments(program, args);
  EXPECT_TRUE(request) << request.error().message;
  return request ? *request : MountRequest{};
}

std::string parse_error(const Args& args) {
  auto request = parse_mount_arguments("mount.sftpfs", args);
  EXPECT_FALSE(request);
  return request ? "" : request.error().message;
}

TEST(MountRequest, UserMountAsLibmountPassesIt) {
  // An fstab line "... sftpfs user,noauto,_netdev,x-systemd.automount,IdentityFile=k,nofail" mounted by a
  // user: libmount drops noauto and x-*, adds noexec,nosuid,nodev for "user", and keeps the rest.
  MountRequest r = parse({"alice@host:/srv", "/mnt/srv", "-o", "rw,noexec,nosuid,nodev,IdentityFile=k,user,_netdev,nofail"});
  EXPECT_EQ(r.source, "alice@host:/srv");
  EXPECT_EQ(r.mountpoint, "/mnt/srv");
  EXPECT_EQ(r.options, (Args{"rw", "noexec", "nosuid", "nodev", "IdentityFile=k"}));
  EXPECT_EQ(r.ignored, (Args{"user", "_netdev", "nofail"}));
  EXPECT_FALSE(r.fake || r.sloppy || r.verbose);
}

TEST(MountRequest, FstabWordsAreTakenOut) {
  MountRequest r = parse({"h:", "/m", "-o",
                          "defaults,auto,noauto,user,users,nouser,owner,group,_netdev,nofail,x-systemd.automount,"
                          "x-systemd.mount-timeout=30,X-mount.mkdir,comment=systemd.automount,,ro"});
  EXPECT_EQ(r.options, (Args{"ro"}));
  EXPECT_EQ(r.ignored.size(), 14u);
}

TEST(MountRequest, SetuidIsTheHelpersOwn) {
  MountRequest r = parse({"h:", "/m", "-o", "setuid=alice,allow_other"});
  EXPECT_EQ(r.setuid_user, "alice");
  EXPECT_EQ(r.options, (Args{"allow_other"}));
  EXPECT_NE(parse_error({"h:", "/m", "-o", "setuid="}).find("setuid= needs a user name"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "drop_privileges"}).find("setuid=USER"), std::string::npos);
}

TEST(MountRequest, MountsFlags) {
  MountRequest r = parse({"h:", "/m", "-s", "-f", "-n", "-v", "-o", "ro"});
  EXPECT_TRUE(r.sloppy && r.fake && r.verbose);
  MountRequest combined = parse({"h:", "/m", "-sfnv"});
  EXPECT_TRUE(combined.sloppy && combined.fake && combined.verbose);
  EXPECT_NE(parse_error({"h:", "/m", "-x"}).find("unknown flag -x"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-N", "/proc/1/ns/mnt"}).find("-N"), std::string::npos);
}

TEST(MountRequest, TypeGivenByMount) {
  EXPECT_EQ(parse({"h:", "/m", "-t", "fuse.sftpfs"}, "mount.fuse.sftpfs").program, "mount.fuse.sftpfs");
  parse({"h:", "/m", "-t", "sftpfs"});
  EXPECT_NE(parse_error({"h:", "/m", "-t", "fuse.sshfs"}).find("cannot mount type fuse.sshfs"), std::string::npos);
}

TEST(MountRequest, SourceAndMountPointAreRequired) {
  EXPECT_NE(parse_error({"h:"}).find("usage: mount.sftpfs"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "/extra"}).find("usage"), std::string::npos);
  EXPECT_NE(parse_error({"", "/m"}).find("no source"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o"}).find("-o needs a value"), std::string::npos);
  EXPECT_EQ(parse({"sftpfs#alice@h:/x", "/m"}).source, "alice@h:/x");  // the old FUSE "type#source"
}

TEST(MountRequest, QuotedAndEscapedCommas) {
  EXPECT_EQ(split_mount_options("a,Ciphers=\"aes128-ctr,aes256-ctr\",b"), (Args{"a", "Ciphers=aes128-ctr,aes256-ctr", "b"}));
  EXPECT_EQ(split_mount_options("MACs=x\\,y,z"), (Args{"MACs=x,y", "z"}));
  EXPECT_EQ(split_mount_options(""), (Args{""}));
}

TEST(SftpfsCommand, RelativeIdentityFileIsFromTheHome) {
  MountRequest r = parse({"h:", "/m", "-o", "IdentityFile=.ssh/id_fstab,identityfile=/abs,IdentityFile=~/k,"
                                            "IdentityFile=%d/k,max_conns=2"});
  SftpfsCommand c = sftpfs_command(r, "/home/alice", false);
  EXPECT_EQ(c.args, (Args{"h:", "/m", "-o", "IdentityFile=/home/alice/.ssh/id_fstab", "-o", "identityfile=/abs", "-o",
                          "IdentityFile=~/k", "-o", "IdentityFile=%d/k", "-o", "max_conns=2"}));
}

TEST(SftpfsCommand, CommasAndBackslashesReachSftpfsEscaped) {
  MountRequest r = parse({"h:", "/m", "-o", "Ciphers=\"aes128-ctr,aes256-ctr\""});
  EXPECT_EQ(sftpfs_command(r, "/root", false).args, (Args{"h:", "/m", "-o", "Ciphers=aes128-ctr\\,aes256-ctr"}));
}

TEST(SftpfsCommand, RootGetsDevAndSuidAsMountGivesEveryFilesystem) {
  EXPECT_EQ(sftpfs_command(parse({"h:", "/m"}), "/root", true).args, (Args{"h:", "/m", "-o", "dev", "-o", "suid"}));
  EXPECT_EQ(sftpfs_command(parse({"h:", "/m", "-o", "nosuid"}), "/root", true).args,
            (Args{"h:", "/m", "-o", "nosuid", "-o", "dev"}));
  EXPECT_EQ(sftpfs_command(parse({"h:", "/m", "-o", "nodev,nosuid"}), "/root", true).args,
            (Args{"h:", "/m", "-o", "nodev", "-o", "nosuid"}));
  // Another user mounts through fusermount3, which would only warn about dev and suid.
  EXPECT_EQ(sftpfs_command(parse({"h:", "/m"}), "/home/alice", false).args, (Args{"h:", "/m"}));
}

}  // namespace
}  // namespace sftpfs::mount_helper
