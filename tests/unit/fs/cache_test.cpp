#include "fs/cache.hpp"

#include <gtest/gtest.h>

namespace sftpfs::fs {
namespace {

using namespace std::chrono_literals;

struct FakeClock {
  CacheClock::time_point now{};
  ClockFn fn() {
    return [this] { return now; };
  }
};

sftp::Attrs file_attrs(uint64_t size) {
  sftp::Attrs a;
  a.set_size(size).set_permissions(0100644);
  return a;
}

sftp::Attrs dir_attrs(uint32_t mtime) {
  sftp::Attrs a;
  a.set_permissions(040755).set_times(mtime, mtime);
  return a;
}

TEST(TtlMap, ExpiresWithoutSleeping) {
  FakeClock clock;
  TtlMap<int> map(1000ms, 10, clock.fn());
  map.put("/a", 1);
  clock.now += 999ms;
  EXPECT_EQ(map.get("/a"), 1);
  clock.now += 1ms;
  EXPECT_FALSE(map.get("/a"));
}

TEST(TtlMap, CountsHitsAndMissesAndPurgesExpired) {
  FakeClock clock;
  TtlMap<int> map(1000ms, 10, clock.fn());
  map.put("/a", 1);
  map.put("/b", 2);
  EXPECT_EQ(map.get("/a"), 1);
  EXPECT_FALSE(map.get("/c"));
  clock.now += 500ms;
  map.put("/c", 3);
  clock.now += 500ms;  // /a and /b expire, /c lives on
  EXPECT_FALSE(map.get("/a"));
  auto counts = map.counts();
  EXPECT_EQ(counts.hits, 1u);
  EXPECT_EQ(counts.misses, 2u);
  EXPECT_EQ(counts.entries, 3u);  // expired entries stay until looked at or purged
  EXPECT_EQ(map.purge_expired(), 2u);
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(map.get("/c"), 3);
}

TEST(Caches, PurgeExpiredEmptiesEveryCache) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 1000ms;
  Caches caches(config, clock.fn());
  auto listing = std::make_shared<const std::vector<DirEntry>>(std::vector<DirEntry>{{"f", file_attrs(1), 1}});
  caches.put_listing("/d", listing);
  caches.negative.put("/d/missing", true);
  EXPECT_EQ(caches.purge_expired(), 0u);
  clock.now += 1000ms;
  EXPECT_EQ(caches.purge_expired(), 3u);  // the listing, its entry's attributes, the negative entry
  EXPECT_EQ(caches.attrs.size() + caches.dirs.size() + caches.negative.size(), 0u);
}

TEST(TtlMap, ZeroTtlDisables) {
  FakeClock clock;
  TtlMap<int> map(0ms, 10, clock.fn());
  map.put("/a", 1);
  EXPECT_FALSE(map.get("/a"));
  EXPECT_EQ(map.size(), 0u);
}

TEST(TtlMap, InvalidateTreeDropsOnlyTheSubtree) {
  FakeClock clock;
  TtlMap<int> map(10s, 100, clock.fn());
  for (const char* k : {"/d", "/d/x", "/d/x/y", "/dd", "/d.txt", "/e"}) map.put(k, 1);
  map.invalidate_tree("/d");
  EXPECT_FALSE(map.get("/d"));
  EXPECT_FALSE(map.get("/d/x"));
  EXPECT_FALSE(map.get("/d/x/y"));
  EXPECT_TRUE(map.get("/dd"));
  EXPECT_TRUE(map.get("/d.txt"));
  EXPECT_TRUE(map.get("/e"));
}

TEST(TtlMap, BoundedSize) {
  FakeClock clock;
  TtlMap<int> map(10s, 3, clock.fn());
  map.put("/1", 1);
  map.put("/2", 2);
  clock.now += 11s;  // those two expired
  map.put("/3", 3);
  map.put("/4", 4);  // full: expired entries make room
  EXPECT_TRUE(map.get("/3"));
  EXPECT_TRUE(map.get("/4"));
  EXPECT_LE(map.size(), 3u);
  map.put("/5", 5);
  map.put("/6", 6);
  EXPECT_LE(map.size(), 3u);
  EXPECT_TRUE(map.get("/6"));
}

TEST(Caches, ListingFeedsAttributes) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = 5s;
  config.dir_ttl = 5s;
  config.negative_ttl = 1s;
  Caches caches(config, clock.fn());
  auto listing = std::make_shared<std::vector<DirEntry>>();
  listing->push_back({"f", file_attrs(42), 2});
  caches.put_listing("/r", listing);
  auto cached = caches.attrs.get("/r/f");
  ASSERT_TRUE(cached);
  EXPECT_EQ(cached->attrs.size, 42u);
  EXPECT_EQ(cached->nlink, 2u);
  auto found = caches.from_listing("/r", "f");
  ASSERT_TRUE(found && *found);
  auto absent = caches.from_listing("/r", "g");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);                         // listed directory without the name: absent
  EXPECT_FALSE(caches.from_listing("/other", "f"));  // no listing: unknown
  clock.now += 5s;
  EXPECT_FALSE(caches.attrs.get("/r/f"));
  EXPECT_FALSE(caches.from_listing("/r", "f"));
}

TEST(Caches, ChangeInvalidatesEntryAndParentListing) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 5s;
  Caches caches(config, clock.fn());
  caches.put_listing("/r", std::make_shared<std::vector<DirEntry>>(std::vector<DirEntry>{{"f", file_attrs(1), 0}}));
  caches.negative.put("/r/g", true);
  caches.changed_unknown("/r/g");  // something happened to g
  EXPECT_FALSE(caches.negative.get("/r/g"));
  EXPECT_FALSE(caches.dirs.get("/r"));
  EXPECT_TRUE(caches.attrs.get("/r/f"));  // siblings keep their attributes
  caches.changed_tree("/r");
  EXPECT_FALSE(caches.attrs.get("/r/f"));
}

TEST(Caches, NameChangesForgetTheParentsOwnAttributes) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 5s;
  Caches caches(config, clock.fn());
  const sftp::Attrs dir = dir_attrs(1);
  caches.put_listing("/r", std::make_shared<std::vector<DirEntry>>(std::vector<DirEntry>{{"d", dir, 2}}));
  caches.put_listing("/r/d", std::make_shared<std::vector<DirEntry>>());
  ASSERT_TRUE(caches.attrs.get("/r/d"));
  caches.added("/r/d/new", file_attrs(0));
  EXPECT_FALSE(caches.attrs.get("/r/d"));  // its mtime moved
  auto entry = caches.from_listing("/r", "d");
  ASSERT_TRUE(entry && *entry);
  EXPECT_EQ((*entry)->attrs.flags, 0u);  // unknown in the parent's listing too
  EXPECT_TRUE(caches.from_listing("/r/d", "new"));  // the directory's own listing is edited, not dropped
  caches.attrs.put("/r/d", CachedAttrs{dir, 0});
  caches.removed("/r/d/new");
  EXPECT_FALSE(caches.attrs.get("/r/d"));
  caches.attrs.put("/r/d", CachedAttrs{dir, 0});
  caches.changed("/r/d/other");  // data or attributes of an entry: the directory is unchanged
  EXPECT_TRUE(caches.attrs.get("/r/d"));
}

TEST(TtlMap, PutIfUnchangedRefusesAfterAnyChangeAndDropsTheKey) {
  FakeClock clock;
  TtlMap<int> map(1000ms, 10, clock.fn());
  map.put("/d", 1);
  auto asked = map.version("/d");
  EXPECT_TRUE(map.put_if_unchanged("/d", 2, asked));
  EXPECT_EQ(map.get("/d"), 2);
  asked = map.version("/d");
  map.invalidate("/d");  // a change came between the question and the answer
  EXPECT_FALSE(map.put_if_unchanged("/d", 3, asked));
  EXPECT_FALSE(map.get("/d"));
  asked = map.version("/d");
  map.put("/d", 4);  // a newer answer was put meanwhile: the older one is not trusted over it
  EXPECT_FALSE(map.put_if_unchanged("/d", 5, asked));
  EXPECT_FALSE(map.get("/d"));
  asked = map.version("/d");
  map.invalidate_tree("/");  // a subtree went
  EXPECT_FALSE(map.put_if_unchanged("/d", 6, asked));
  asked = map.version("/d");
  map.update("/d", [](int v) -> std::optional<int> { return v; });
  EXPECT_TRUE(map.put_if_unchanged("/d", 7, asked));  // update of an absent key: no change
}

TEST(Caches, AddedKeepsTheParentsAttributesReadBackUnlessChangedMeanwhile) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 5s;
  Caches caches(config, clock.fn());
  const sftp::Attrs dir = dir_attrs(1);
  const sftp::Attrs after = dir_attrs(2);
  caches.attrs.put("/r/d", CachedAttrs{dir, 0});
  auto asked = caches.attrs.version("/r/d");
  caches.added("/r/d/a", file_attrs(0), 0, Caches::AttrsAsked{after, asked});
  auto kept = caches.attrs.get("/r/d");
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->attrs.mtime, 2u);
  // Another create in the same directory answered between our question and our answer.
  asked = caches.attrs.version("/r/d");
  caches.added("/r/d/b", file_attrs(0));
  caches.added("/r/d/c", file_attrs(0), 0, Caches::AttrsAsked{after, asked});
  EXPECT_FALSE(caches.attrs.get("/r/d"));
}

TEST(Caches, AgeOfAnEntry) {
  FakeClock clock;
  TtlMap<int> map(1000ms, 10, clock.fn());
  EXPECT_FALSE(map.age("/a"));
  map.put("/a", 1);
  clock.now += 300ms;
  EXPECT_EQ(map.age("/a"), 300ms);
  clock.now += 700ms;
  EXPECT_FALSE(map.age("/a"));
}

TEST(Caches, ListingsFollowWhatThisMountAddsAndRemoves) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 5s;
  Caches caches(config, clock.fn());
  caches.created_empty_dir("/r/new");
  auto absent = caches.from_listing("/r/new", "a");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);  // known empty: no round trip to say ENOENT
  caches.negative.put("/r/new/a", true);
  caches.added("/r/new/a", file_attrs(7));
  EXPECT_FALSE(caches.negative.get("/r/new/a"));
  auto found = caches.from_listing("/r/new", "a");
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->attrs.size, 7u);
  EXPECT_EQ(caches.attrs.get("/r/new/a")->attrs.size, 7u);
  // Attributes changed (a write, a chmod): the name stays listed, its attributes become unknown.
  caches.changed("/r/new/a");
  found = caches.from_listing("/r/new", "a");
  ASSERT_TRUE(found && *found);
  EXPECT_EQ((*found)->attrs.flags, 0u);
  EXPECT_FALSE(caches.attrs.get("/r/new/a"));
  // Other names are still known absent.
  absent = caches.from_listing("/r/new", "b");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
  caches.removed("/r/new/a");
  absent = caches.from_listing("/r/new", "a");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
  // Edits keep the listing's expiry: they never make it live longer.
  clock.now += 5s;
  EXPECT_FALSE(caches.from_listing("/r/new", "b"));
  caches.added("/r/new/b", file_attrs(1));
  EXPECT_FALSE(caches.dirs.get("/r/new"));
}

TEST(Caches, ListingsReadAheadAnswerForAbsentNamesToo) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = 5s;
  config.negative_ttl = 3s;
  Caches caches(config, clock.fn());
  auto listing = std::make_shared<std::vector<DirEntry>>(std::vector<DirEntry>{{"f", file_attrs(3), 0}});
  ASSERT_TRUE(caches.put_listing_since("/r", listing, caches.listing_stamp(), /*read_ahead=*/true));
  auto found = caches.from_listing("/r", "f");
  ASSERT_TRUE(found && *found);
  // Absent: the server said so when it was read; the lookup answers so only within negative_timeout
  // of that moment, which dirs.age tells.
  auto absent = caches.from_listing("/r", "g");
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
  EXPECT_EQ(caches.dirs.age("/r"), 0ms);
  EXPECT_TRUE(caches.listing_for_readdir("/r"));  // young: a tree walk opens it next
  clock.now += Caches::kReadAheadServesReaddir;
  EXPECT_TRUE(caches.listing_for_readdir("/r"));  // negative_timeout (3 s) is longer than 2 s
  clock.now += 1s;
  EXPECT_FALSE(caches.listing_for_readdir("/r"));  // nobody asked for it in time: read afresh
  EXPECT_EQ(caches.dirs.age("/r"), 3s);
  found = caches.from_listing("/r", "f");
  ASSERT_TRUE(found && *found);                    // still answers for the names it has
}

TEST(Caches, AListingReadAheadServesAReaddirAtLeastTwoSeconds) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = 20s;
  config.negative_ttl = 1s;
  Caches caches(config, clock.fn());
  auto listing = std::make_shared<std::vector<DirEntry>>();
  ASSERT_TRUE(caches.put_listing_since("/r", listing, caches.listing_stamp(), /*read_ahead=*/true));
  clock.now += 1500ms;
  EXPECT_TRUE(caches.listing_for_readdir("/r"));
  clock.now += 500ms;
  EXPECT_FALSE(caches.listing_for_readdir("/r"));
}

TEST(Caches, ARemovedNameIsRememberedMissing) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = 5s;
  config.negative_ttl = 1s;
  Caches caches(config, clock.fn());
  caches.attrs.put("/r/f", CachedAttrs{file_attrs(1), 0});
  caches.attrs.put("/r/d/x", CachedAttrs{file_attrs(1), 0});
  caches.removed("/r/f");
  caches.removed("/r/d");
  EXPECT_FALSE(caches.attrs.get("/r/f"));
  EXPECT_EQ(caches.negative.age("/r/f"), 0ms);  // the negative rule's clock starts at the removal
  EXPECT_TRUE(caches.negative.get("/r/d"));
  EXPECT_FALSE(caches.attrs.get("/r/d/x"));
  EXPECT_FALSE(caches.negative.get("/r/d/x"));  // only the name removed, not guesses below it
  // A rename onto the name (removed, then added) or a create through this mount forgets it.
  caches.added("/r/f", file_attrs(2));
  EXPECT_FALSE(caches.negative.get("/r/f"));
  // negative_timeout bounds it like any missing name: created elsewhere, it shows after that.
  clock.now += 1s;
  EXPECT_FALSE(caches.negative.get("/r/d"));
}

TEST(Caches, ADirectorysOwnAttributeChangeKeepsItsListing) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 5s;
  Caches caches(config, clock.fn());
  const sftp::Attrs dir = dir_attrs(1);
  caches.put_listing("/r", std::make_shared<std::vector<DirEntry>>(std::vector<DirEntry>{{"d", dir, 2}}));
  caches.put_listing("/r/d", std::make_shared<std::vector<DirEntry>>(std::vector<DirEntry>{{"f", file_attrs(1), 0}}));
  uint64_t stamp = caches.listing_stamp();
  caches.dir_attributes_changed("/r/d");
  EXPECT_FALSE(caches.attrs.get("/r/d"));  // its own attributes are forgotten, here and in /r
  auto entry = caches.from_listing("/r", "d");
  ASSERT_TRUE(entry && *entry);
  EXPECT_EQ((*entry)->attrs.flags, 0u);
  auto absent = caches.from_listing("/r/d", "g");  // its listing still answers
  ASSERT_TRUE(absent);
  EXPECT_FALSE(*absent);
  EXPECT_TRUE(caches.attrs.get("/r/d/f"));
  // A listing of it being read meanwhile is still right; one of its parent is not.
  auto empty = std::make_shared<std::vector<DirEntry>>();
  EXPECT_TRUE(caches.put_listing_since("/r/d", empty, stamp));
  EXPECT_FALSE(caches.put_listing_since("/r", empty, stamp));
  // changed() (a chmod that could take access away) drops it.
  caches.changed("/r/d");
  EXPECT_FALSE(caches.dirs.get("/r/d"));
}

TEST(Caches, AListingReadWhileTheDirectoryChangedIsNotKept) {
  FakeClock clock;
  Caches::Config config;
  config.attr_ttl = config.dir_ttl = config.negative_ttl = 5s;
  Caches caches(config, clock.fn());
  uint64_t stamp = caches.listing_stamp();
  caches.added("/r/new", file_attrs(1));  // created while the listing was being read
  auto listing = std::make_shared<std::vector<DirEntry>>();
  EXPECT_FALSE(caches.put_listing_since("/r", listing, stamp));
  EXPECT_FALSE(caches.dirs.get("/r"));
  // Another directory's changes do not matter.
  EXPECT_TRUE(caches.put_listing_since("/s", listing, stamp));
}

TEST(Caches, ParentPath) {
  EXPECT_EQ(Caches::parent_path("/a/b"), "/a");
  EXPECT_EQ(Caches::parent_path("/a"), "/");
  EXPECT_EQ(Caches::parent_path("a"), ".");
}

}  // namespace
}  // namespace sftpfs::fs
