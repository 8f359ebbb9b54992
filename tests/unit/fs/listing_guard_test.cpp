#include "fs/listing_guard.hpp"

#include <gtest/gtest.h>

namespace sftpfs::fs {
namespace {

std::vector<sftp::NameEntry> batch(std::initializer_list<std::string> names) {
  std::vector<sftp::NameEntry> out;
  for (const auto& n : names) out.push_back(sftp::NameEntry{n, "", {}});
  return out;
}

std::vector<std::string> names_of(const std::vector<sftp::NameEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.filename);
  return out;
}

TEST(AcceptableEntryName, OnlyNamesOfThisDirectory) {
  EXPECT_TRUE(acceptable_entry_name("a"));
  EXPECT_TRUE(acceptable_entry_name("..."));
  EXPECT_TRUE(acceptable_entry_name("..x"));
  EXPECT_TRUE(acceptable_entry_name(".hidden"));
  EXPECT_FALSE(acceptable_entry_name(""));
  EXPECT_FALSE(acceptable_entry_name("."));
  EXPECT_FALSE(acceptable_entry_name(".."));
  EXPECT_FALSE(acceptable_entry_name("a/b"));
  EXPECT_FALSE(acceptable_entry_name("../up"));
  EXPECT_FALSE(acceptable_entry_name("/abs"));
  EXPECT_FALSE(acceptable_entry_name(std::string("x\0y", 3)));
}

TEST(ListingGuard, HostileNamesAreTakenOutGoodOnesKeptInOrder) {
  ListingGuard guard("/d");
  auto b = batch({".", "..", "a/b", "../up", "/abs", "", std::string("x\0y", 3), "ok", "...", "..x"});
  ASSERT_TRUE(guard.take(b));
  EXPECT_EQ(names_of(b), (std::vector<std::string>{"ok", "...", "..x"}));
}

TEST(ListingGuard, RepeatedNamesAreShownOnce) {
  ListingGuard guard("/d");
  auto first = batch({"a", "b"});
  ASSERT_TRUE(guard.take(first));
  auto second = batch({"b", "c", "c"});
  ASSERT_TRUE(guard.take(second));
  EXPECT_EQ(names_of(second), (std::vector<std::string>{"c"}));
}

TEST(ListingGuard, AReplyWithNothingNewEndsTheListing) {
  ListingGuard guard("/d");
  auto first = batch({"r1", "r2"});
  ASSERT_TRUE(guard.take(first));
  auto again = batch({"r1", "r2"});
  auto st = guard.take(again);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, Error::Kind::protocol);
  EXPECT_NE(st.error().message.find("repeats"), std::string::npos);
}

TEST(ListingGuard, DotsForeverEndToo) {
  ListingGuard guard("/d");
  auto first = batch({".", ".."});
  ASSERT_TRUE(guard.take(first));
  EXPECT_TRUE(first.empty());  // not entries, but new: the listing goes on
  auto again = batch({".", ".."});
  EXPECT_FALSE(guard.take(again));
}

TEST(ListingGuard, AnEmptyReplyIsNotARepeat) {
  ListingGuard guard("/d");
  std::vector<sftp::NameEntry> none;
  EXPECT_TRUE(guard.take(none));
  EXPECT_TRUE(guard.take(none));
}

TEST(ListingGuard, NamesPastTheLimitEndTheListing) {
  ListingGuard guard("/d", 5);
  auto first = batch({"a", "b", "c"});
  ASSERT_TRUE(guard.take(first));
  auto second = batch({"d", "e"});
  ASSERT_TRUE(guard.take(second));
  auto third = batch({"f"});
  auto st = guard.take(third);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("without an end"), std::string::npos);
}

TEST(ListingGuard, ForgetKeepsTheCountButNotTheNames) {
  ListingGuard guard("/d");
  auto first = batch({"a"});
  ASSERT_TRUE(guard.take(first));
  guard.forget();
  auto again = batch({"a"});
  EXPECT_TRUE(guard.take(again));
}

}  // namespace
}  // namespace sftpfs::fs
