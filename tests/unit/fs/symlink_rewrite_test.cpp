#include "fs/symlink_rewrite.hpp"

#include <gtest/gtest.h>

#include <cerrno>

namespace sftpfs::fs {
namespace {

TEST(SymlinkTransform, AbsoluteInsideTheRootBecomesRelativeToTheLinksDirectory) {
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", "/srv/data/file"), "file");
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/a/b/link", "/srv/data/file"), "../../file");
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/a/b/link", "/srv/data/a/c/f"), "../c/f");
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/a/b/link", "/srv/data/a/b/c"), "c");
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/a/link", "/srv/data/a"), ".");
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/a/link", "/srv/data"), "..");
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", "/srv/data/"), ".");
  // Repeated slashes and "." components mean nothing.
  EXPECT_EQ(absolute_target_as_relative("/srv/data/", "/srv/data//a/link", "/srv//data/./x"), "../x");
  // The whole server mounted: every absolute target is inside.
  EXPECT_EQ(absolute_target_as_relative("/", "/home/u/link", "/etc/passwd"), "../../etc/passwd");
}

TEST(SymlinkTransform, OthersStayAsTheyAre) {
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", "relative/x"), std::nullopt);
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", "/srv/database/x"), std::nullopt);
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", "/etc/passwd"), std::nullopt);
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", "/srv/data/../x"), std::nullopt);
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/elsewhere/link", "/srv/data/x"), std::nullopt);
  EXPECT_EQ(absolute_target_as_relative("/srv/data", "/srv/data/link", ""), std::nullopt);
}

TEST(SymlinkContain, LeadingDotDotUpToTheLinksDepthOnly) {
  EXPECT_TRUE(target_stays_inside("file", 0));
  EXPECT_TRUE(target_stays_inside("./a/./b", 0));
  EXPECT_TRUE(target_stays_inside("../x", 1));
  EXPECT_TRUE(target_stays_inside("../../x/y", 2));
  EXPECT_TRUE(target_stays_inside("..", 1));
  EXPECT_FALSE(target_stays_inside("../x", 0));
  EXPECT_FALSE(target_stays_inside("../../x", 1));
  EXPECT_FALSE(target_stays_inside("/etc/passwd", 5));
  // A ".." after another component may follow a symlink anywhere: refused whatever the depth.
  EXPECT_FALSE(target_stays_inside("sub/../x", 3));
  EXPECT_FALSE(target_stays_inside("../sub/../x", 3));
}

TEST(SymlinkPolicy, NoneShowsTheServersTarget) {
  auto shown = shown_symlink_target("/srv/data", "/srv/data/a/link", "/srv/data/x", {});
  ASSERT_TRUE(shown);
  EXPECT_EQ(*shown, "/srv/data/x");
  shown = shown_symlink_target("/srv/data", "/srv/data/link", "../../etc", {});
  ASSERT_TRUE(shown);
  EXPECT_EQ(*shown, "../../etc");
}

TEST(SymlinkPolicy, ContainRefusesWhatLeavesWithEperm) {
  SymlinkPolicy contain{.transform = false, .contain = true};
  auto shown = shown_symlink_target("/srv/data", "/srv/data/link", "/srv/data/x", contain);
  ASSERT_FALSE(shown);
  EXPECT_EQ(shown.error().kind, Error::Kind::local);
  EXPECT_EQ(shown.error().code, static_cast<uint32_t>(EPERM));
  EXPECT_FALSE(shown_symlink_target("/srv/data", "/srv/data/link", "../x", contain));
  auto inside = shown_symlink_target("/srv/data", "/srv/data/a/link", "../x", contain);
  ASSERT_TRUE(inside);
  EXPECT_EQ(*inside, "../x");
}

TEST(SymlinkPolicy, TransformThenContain) {
  SymlinkPolicy both{.transform = true, .contain = true};
  // Absolute inside: made relative, and then it is contained.
  auto shown = shown_symlink_target("/srv/data", "/srv/data/a/b/link", "/srv/data/x", both);
  ASSERT_TRUE(shown);
  EXPECT_EQ(*shown, "../../x");
  // Absolute outside: left absolute by transform, refused by contain.
  EXPECT_FALSE(shown_symlink_target("/srv/data", "/srv/data/a/link", "/etc/passwd", both));
  SymlinkPolicy transform{.transform = true, .contain = false};
  shown = shown_symlink_target("/srv/data", "/srv/data/a/link", "/etc/passwd", transform);
  ASSERT_TRUE(shown);
  EXPECT_EQ(*shown, "/etc/passwd");
}

}  // namespace
}  // namespace sftpfs::fs
