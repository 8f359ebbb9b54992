// Every request type the client sends, against OpenSSH's sftp-server, with results checked on the
// server side through ordinary syscalls.
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "engine_fixture.hpp"

namespace sftpfs::test {
namespace {

using client::wait_for;
using client::FileRef;

TEST_F(EngineTest, NegotiatesVersionExtensionsAndLimits) {
  auto& c = connect();
  EXPECT_EQ(c.features().version.version, 3u);
  for (auto ext : {sftp::kExtPosixRename, sftp::kExtStatvfs, sftp::kExtFstatvfs, sftp::kExtHardlink, sftp::kExtFsync,
                   sftp::kExtLsetstat, sftp::kExtLimits, sftp::kExtExpandPath, sftp::kExtCopyData,
                   sftp::kExtHomeDirectory, sftp::kExtUsersGroupsById})
    EXPECT_TRUE(c.features().has(ext)) << ext;
  // OpenSSH states 261120 bytes per read/write and 262144 per packet; we stay within both.
  EXPECT_EQ(c.features().limits.max_read_length, 261120u);
  EXPECT_GT(c.features().max_read, 32768u);
  EXPECT_LE(c.features().max_read, 261120u);
  EXPECT_LE(c.features().max_write, 261120u);
}

TEST_F(EngineTest, OpenWriteFstatFsetstatFsyncCloseThenRead) {
  auto& c = connect();
  sftp::Attrs create_attrs;
  create_attrs.set_permissions(0600);
  auto file = wait_for<FileRef>([&](auto cb) {
    c.open(path("a.txt"), sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT | sftp::SSH_FXF_TRUNC, create_attrs, cb);
  });
  ASSERT_TRUE(file) << file.error().message;
  std::string text = "hello, server\n";
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.write(*file, 0, sftp::Bytes(text.begin(), text.end()), cb); }));
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.write(*file, 100, sftp::Bytes{'!'}, cb); }));
  auto attrs = wait_for<sftp::Attrs>([&](auto cb) { c.fstat(*file, cb); });
  ASSERT_TRUE(attrs);
  EXPECT_EQ(attrs->size, 101u);
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.fsetstat(*file, sftp::Attrs().set_permissions(0640), cb); }));
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.fsync(*file, cb); }));
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*file, cb); }));

  std::string local = read_local(path("a.txt"));
  ASSERT_EQ(local.size(), 101u);
  EXPECT_EQ(local.substr(0, text.size()), text);
  EXPECT_EQ(local[100], '!');
  EXPECT_EQ(local[50], '\0');  // a hole reads as zeros
  struct stat st;
  ASSERT_EQ(::stat(path("a.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);

  auto reader = wait_for<FileRef>([&](auto cb) { c.open(path("a.txt"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(reader);
  auto bytes = wait_for<sftp::Bytes>([&](auto cb) { c.read(*reader, 0, 4096, cb); });
  ASSERT_TRUE(bytes) << bytes.error().message;
  EXPECT_EQ(std::string(bytes->begin(), bytes->end()), local);  // short only at end of file
  auto past_end = wait_for<sftp::Bytes>([&](auto cb) { c.read(*reader, 5000, 10, cb); });
  ASSERT_TRUE(past_end);
  EXPECT_TRUE(past_end->empty());
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*reader, cb); }));
}

TEST_F(EngineTest, StatLstatSetstatLsetstat) {
  auto& c = connect();
  write_local(path("target"), "12345");
  ASSERT_EQ(::symlink("target", path("link").c_str()), 0);

  auto st = wait_for<sftp::Attrs>([&](auto cb) { c.stat(path("link"), cb); });
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISREG(st->permissions));
  EXPECT_EQ(st->size, 5u);
  auto lst = wait_for<sftp::Attrs>([&](auto cb) { c.lstat(path("link"), cb); });
  ASSERT_TRUE(lst);
  EXPECT_TRUE(S_ISLNK(lst->permissions));

  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.setstat(path("target"), sftp::Attrs().set_times(1000000000, 1200000000), cb); }));
  struct stat local;
  ASSERT_EQ(::stat(path("target").c_str(), &local), 0);
  EXPECT_EQ(local.st_atime, 1000000000);
  EXPECT_EQ(local.st_mtime, 1200000000);

  // lsetstat changes the link itself, not its target.
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.lsetstat(path("link"), sftp::Attrs().set_times(1300000000, 1400000000), cb); }));
  ASSERT_EQ(::lstat(path("link").c_str(), &local), 0);
  EXPECT_EQ(local.st_mtime, 1400000000);
  ASSERT_EQ(::stat(path("target").c_str(), &local), 0);
  EXPECT_EQ(local.st_mtime, 1200000000);
}

TEST_F(EngineTest, DirectoriesListingRemoveRenameLinks) {
  auto& c = connect();
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.mkdir(path("d"), sftp::Attrs().set_permissions(0750), cb); }));
  struct stat st;
  ASSERT_EQ(::stat(path("d").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0750u);

  std::set<std::string> expected{".", ".."};
  for (int i = 0; i < 300; ++i) {
    std::string name = "f" + std::to_string(i);
    write_local(path("d/" + name), name);
    expected.insert(name);
  }
  auto dir = wait_for<FileRef>([&](auto cb) { c.opendir(path("d"), cb); });
  ASSERT_TRUE(dir);
  std::set<std::string> seen;
  for (;;) {
    auto page = wait_for<std::vector<sftp::NameEntry>>([&](auto cb) { c.readdir(*dir, cb); });
    ASSERT_TRUE(page) << page.error().message;
    if (page->empty()) break;
    for (auto& entry : *page) {
      EXPECT_TRUE(entry.attrs.has(sftp::SSH_FILEXFER_ATTR_SIZE));
      seen.insert(entry.filename);
    }
  }
  EXPECT_EQ(seen, expected);
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*dir, cb); }));

  // rename replaces an existing target atomically (posix-rename)
  write_local(path("old"), "old");
  write_local(path("new"), "new");
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.rename(path("old"), path("new"), cb); }));
  EXPECT_EQ(read_local(path("new")), "old");
  EXPECT_NE(::access(path("old").c_str(), F_OK), 0);

  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.hardlink(path("new"), path("hard"), cb); }));
  ASSERT_EQ(::stat(path("new").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);

  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.symlink("new", path("sym"), cb); }));
  char target[64] = {};
  ASSERT_GT(::readlink(path("sym").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "new");  // OpenSSH's argument order: target first
  auto read_back = wait_for<std::string>([&](auto cb) { c.readlink(path("sym"), cb); });
  ASSERT_TRUE(read_back);
  EXPECT_EQ(*read_back, "new");

  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.remove(path("hard"), cb); }));
  EXPECT_NE(::access(path("hard").c_str(), F_OK), 0);
  auto not_empty = wait_for<void>([&](auto cb) { c.rmdir(path("d"), cb); });
  ASSERT_FALSE(not_empty);
  EXPECT_EQ(not_empty.error().kind, Error::Kind::sftp_status);
  ASSERT_EQ(std::system(("rm -f " + path("d") + "/*").c_str()), 0);
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.rmdir(path("d"), cb); }));
  EXPECT_NE(::access(path("d").c_str(), F_OK), 0);
}

TEST_F(EngineTest, RealpathHomeStatvfsCopyDataAndRawExtensions) {
  auto& c = connect();
  ASSERT_EQ(::mkdir(path("x").c_str(), 0755), 0);  // OpenSSH resolves only existing components
  auto real = wait_for<std::string>([&](auto cb) { c.realpath(dir_ + "/./x/..", cb); });
  ASSERT_TRUE(real) << real.error().message;
  char resolved[PATH_MAX];
  ASSERT_NE(::realpath(dir_.c_str(), resolved), nullptr);
  EXPECT_EQ(*real, resolved);
  auto home = wait_for<std::string>([&](auto cb) { c.home_directory("root", cb); });
  ASSERT_TRUE(home);
  EXPECT_EQ(*home, "/root");

  auto vfs = wait_for<sftp::Statvfs>([&](auto cb) { c.statvfs(dir_, cb); });
  ASSERT_TRUE(vfs);
  struct statvfs local;
  ASSERT_EQ(::statvfs(dir_.c_str(), &local), 0);
  EXPECT_EQ(vfs->blocks, local.f_blocks);
  EXPECT_EQ(vfs->frsize, local.f_frsize);

  write_local(path("src"), std::string(100000, 'x') + "tail");
  auto from = wait_for<FileRef>([&](auto cb) { c.open(path("src"), sftp::SSH_FXF_READ, {}, cb); });
  auto to = wait_for<FileRef>([&](auto cb) {
    c.open_on((*from)->connection, path("dst"), sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT, {}, cb);
  });
  ASSERT_TRUE(from && to);
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.copy_data(*from, 0, 0, *to, 0, cb); }));
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*from, cb); }));
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*to, cb); }));
  EXPECT_EQ(read_local(path("dst")), read_local(path("src")));

  // expand-path and users-groups-by-id through raw requests and the codec's reply parsers
  auto expanded = wait_for<sftp::Reply>([&](auto cb) { c.submit(0, sftp::build_expand_path(0, "~/"), cb); });
  ASSERT_TRUE(expanded);
  auto* names = std::get_if<sftp::NameReply>(&expanded->body);
  ASSERT_NE(names, nullptr);
  ASSERT_EQ(names->names.size(), 1u);
  EXPECT_EQ(names->names[0].filename, "/root");

  std::vector<std::string> user_names, group_names;
  const uint32_t ids[] = {0};
  std::promise<void> got;
  c.submit(0, sftp::build_users_groups_by_id(0, ids, ids), [&](Result<sftp::Reply> reply) {
    if (reply) {
      if (auto* ext = std::get_if<sftp::ExtendedReply>(&reply->body)) {
        auto parsed = sftp::parse_users_groups(ext->payload);
        if (parsed) std::tie(user_names, group_names) = *parsed;
      }
    }
    got.set_value();
  });
  got.get_future().wait();
  ASSERT_EQ(user_names.size(), 1u);
  EXPECT_EQ(user_names[0], "root");
  ASSERT_EQ(group_names.size(), 1u);
  EXPECT_EQ(group_names[0], "root");
}

TEST_F(EngineTest, MissingFileIsNoSuchFile) {
  auto& c = connect();
  auto st = wait_for<sftp::Attrs>([&](auto cb) { c.stat(path("does-not-exist"), cb); });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, Error::Kind::sftp_status);
  EXPECT_EQ(st.error().code, sftp::SSH_FX_NO_SUCH_FILE);
  EXPECT_EQ(sftp::status_to_errno(st.error().code), ENOENT);
  auto file = wait_for<FileRef>([&](auto cb) { c.open(path("nope/x"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_FALSE(file);
  EXPECT_EQ(sftp::status_to_errno(file.error().code), ENOENT);
}

TEST_F(EngineTest, PermissionDeniedForAnotherUsersFile) {
  std::string user = ensure_test_user();
  write_local(path("secret"), "root only");
  ASSERT_EQ(::chmod(path("secret").c_str(), 0600), 0);
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(server_->dir().c_str(), 0755), 0);
  ASSERT_EQ(::chmod((server_->dir() + "/remote").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(server_->authorized_keys().c_str(), 0644), 0);  // sshd reads it as that user
  auto client = client::Client::connect(session_options(*server_, user), {});
  ASSERT_TRUE(client) << client.error().message;
  auto file = wait_for<FileRef>([&](auto cb) { (*client)->open(path("secret"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, sftp::SSH_FX_PERMISSION_DENIED);
  EXPECT_EQ(sftp::status_to_errno(file.error().code), EACCES);
}

}  // namespace
}  // namespace sftpfs::test
