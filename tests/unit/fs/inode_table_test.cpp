#include "fs/inode_table.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

namespace sftpfs::fs {
namespace {

TEST(InodeTable, RootPathIsRemoteRoot) {
  InodeTable t("/srv/data");
  EXPECT_EQ(t.path(kRootIno), "/srv/data");
  EXPECT_EQ(t.child_path(kRootIno, "a"), "/srv/data/a");
  InodeTable slash("/");
  EXPECT_EQ(slash.child_path(kRootIno, "etc"), "/etc");
}

TEST(InodeTable, LookupCountsAndForget) {
  InodeTable t("/r");
  auto a = t.link(kRootIno, "a", 1);
  ASSERT_TRUE(a);
  EXPECT_EQ(t.link(kRootIno, "a", 2), a);  // same name, same node
  EXPECT_EQ(t.lookup_count(*a), 3u);
  t.forget(*a, 2);
  EXPECT_TRUE(t.contains(*a));
  EXPECT_EQ(t.lookup_count(*a), 1u);
  t.forget(*a, 1);
  EXPECT_FALSE(t.contains(*a));
  EXPECT_FALSE(t.find(kRootIno, "a"));
  // A new node for the same name gets a new number: numbers are never reused.
  auto again = t.link(kRootIno, "a", 1);
  ASSERT_TRUE(again);
  EXPECT_NE(*again, *a);
}

TEST(InodeTable, OverForgetClampsInsteadOfWrapping) {
  InodeTable t("/r");
  auto a = *t.link(kRootIno, "a", 1);
  t.forget(a, 5);
  EXPECT_FALSE(t.contains(a));
}

TEST(InodeTable, RenameKeepsInoAndMovesSubtree) {
  InodeTable t("/r");
  auto d = *t.link(kRootIno, "d", 1, S_IFDIR);
  auto f = *t.link(d, "f", 1, S_IFREG);
  auto e = *t.link(kRootIno, "e", 1, S_IFDIR);
  t.rename(kRootIno, "d", e, "moved");
  EXPECT_EQ(t.path(d), "/r/e/moved");
  EXPECT_EQ(t.path(f), "/r/e/moved/f");
  EXPECT_EQ(t.find(e, "moved"), d);
  EXPECT_FALSE(t.find(kRootIno, "d"));
}

TEST(InodeTable, RenameOverExistingDetachesTarget) {
  InodeTable t("/r");
  auto a = *t.link(kRootIno, "a", 1);
  auto b = *t.link(kRootIno, "b", 1);
  t.rename(kRootIno, "a", kRootIno, "b");
  EXPECT_EQ(t.find(kRootIno, "b"), a);
  EXPECT_EQ(t.path(a), "/r/b");
  EXPECT_TRUE(t.contains(b));  // the kernel still holds it
  EXPECT_TRUE(t.detached(b));
  EXPECT_FALSE(t.path(b));
  t.forget(b, 1);
  EXPECT_FALSE(t.contains(b));
  EXPECT_EQ(t.find(kRootIno, "b"), a);  // forgetting the old node does not touch the new name
}

TEST(InodeTable, UnlinkedOpenFileLivesUntilClosed) {
  InodeTable t("/r");
  auto a = *t.link(kRootIno, "a", 1);
  t.open_ref(a);
  t.unlink(kRootIno, "a");
  EXPECT_TRUE(t.detached(a));
  t.forget(a, 1);
  EXPECT_TRUE(t.contains(a));  // still open
  auto fresh = *t.link(kRootIno, "a", 1);  // a new file with the same name is another node
  EXPECT_NE(fresh, a);
  t.close_ref(a);
  EXPECT_FALSE(t.contains(a));
  EXPECT_TRUE(t.contains(fresh));
}

TEST(InodeTable, ParentKeptWhileChildReferenced) {
  InodeTable t("/r");
  auto d = *t.link(kRootIno, "d", 1, S_IFDIR);
  auto f = *t.link(d, "f", 1);
  t.forget(d, 1);
  EXPECT_TRUE(t.contains(d));  // f's path needs it
  EXPECT_EQ(t.path(f), "/r/d/f");
  t.forget(f, 1);
  EXPECT_FALSE(t.contains(f));
  EXPECT_FALSE(t.contains(d));  // went with its last child
  EXPECT_EQ(t.size(), 1u);      // the root only
}

TEST(InodeTable, LinkUnderDetachedParentFails) {
  InodeTable t("/r");
  auto d = *t.link(kRootIno, "d", 1, S_IFDIR);
  t.unlink(kRootIno, "d");
  EXPECT_FALSE(t.link(d, "x", 1));
  EXPECT_FALSE(t.child_path(d, "x"));
}

TEST(InodeTable, NlinkAndTypeRemembered) {
  InodeTable t("/r");
  auto a = *t.link(kRootIno, "a", 1, S_IFREG);
  EXPECT_EQ(t.nlink(a), 0u);
  t.set_nlink(a, 3);
  EXPECT_EQ(t.nlink(a), 3u);
  EXPECT_EQ(t.type(a), static_cast<mode_t>(S_IFREG));
  // Another kind of object now under that name: the old link count means nothing.
  t.link(kRootIno, "a", 1, S_IFDIR);
  EXPECT_EQ(t.nlink(a), 0u);
  EXPECT_EQ(t.type(a), static_cast<mode_t>(S_IFDIR));
}

TEST(InodeTable, HardLinksAreOneNodeWithOneLinkCount) {
  InodeTable t("/r");
  auto d = *t.link(kRootIno, "d", 1, S_IFDIR);
  auto a = *t.link(kRootIno, "a", 1, S_IFREG);
  ASSERT_TRUE(t.add_name(a, d, "b"));
  t.set_nlink(a, 2);
  EXPECT_EQ(t.find(d, "b"), a);
  EXPECT_EQ(t.link(d, "b", 1), a);  // a lookup of the new name finds the same node
  EXPECT_EQ(t.paths(a), (std::vector<std::string>{"/r/a", "/r/d/b"}));
  // Removing the first name: the other becomes the path, the count drops.
  EXPECT_EQ(t.unlink(kRootIno, "a"), a);
  EXPECT_EQ(t.path(a), "/r/d/b");
  EXPECT_EQ(t.nlink(a), 1u);
  EXPECT_FALSE(t.detached(a));
  EXPECT_FALSE(t.unlinked(a));
  // A rename over a name of a linked node takes only that name.
  ASSERT_TRUE(t.add_name(a, kRootIno, "c"));
  t.set_nlink(a, 2);
  auto x = *t.link(kRootIno, "x", 1, S_IFREG);
  EXPECT_EQ(t.rename(kRootIno, "x", kRootIno, "c"), a);
  EXPECT_EQ(t.find(kRootIno, "c"), x);
  EXPECT_EQ(t.nlink(a), 1u);
  EXPECT_EQ(t.path(a), "/r/d/b");
  // Renaming one name onto another name of the same node changes nothing (POSIX).
  ASSERT_TRUE(t.add_name(a, kRootIno, "e"));
  EXPECT_FALSE(t.rename(kRootIno, "e", d, "b"));
  EXPECT_EQ(t.find(kRootIno, "e"), a);
  // The last name goes: detached, zero links, alive while the kernel holds it.
  t.unlink(kRootIno, "e");
  t.unlink(d, "b");
  EXPECT_TRUE(t.detached(a));
  EXPECT_TRUE(t.unlinked(a));
  EXPECT_TRUE(t.contains(a));
  t.forget(a, 2);
  EXPECT_FALSE(t.contains(a));
  EXPECT_TRUE(t.contains(d));
}

TEST(InodeTable, ForgettingALinkedNodeRemovesEveryName) {
  InodeTable t("/r");
  auto d = *t.link(kRootIno, "d", 1, S_IFDIR);
  auto a = *t.link(kRootIno, "a", 1, S_IFREG);
  ASSERT_TRUE(t.add_name(a, d, "b"));
  t.forget(d, 1);  // d is kept: it has a child
  EXPECT_TRUE(t.contains(d));
  t.forget(a, 1);
  EXPECT_FALSE(t.contains(a));
  EXPECT_FALSE(t.find(d, "b"));
  EXPECT_FALSE(t.contains(d));  // kept only for that name
}

}  // namespace
}  // namespace sftpfs::fs
