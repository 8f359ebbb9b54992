// Reply parsing: every reply type, then every way a hostile or broken server can malform one.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "sftp/protocol.hpp"
#include "sftp/wire.hpp"
#include "wire_bytes.hpp"

namespace sftpfs::sftp {
namespace {

using testing::Bytes8;
using testing::view;

Bytes8 reply(uint8_t type, uint32_t id) { return std::move(Bytes8().u8(type).u32(id)); }

Bytes status_full() { return reply(SSH_FXP_STATUS, 7).u32(SSH_FX_NO_SUCH_FILE).str("No such file").str("en").bytes(); }
Bytes handle_reply() { return reply(SSH_FXP_HANDLE, 8).str("\x01\x02handle").bytes(); }
Bytes data_reply() { return reply(SSH_FXP_DATA, 9).str("hello").bytes(); }
Bytes name_reply() {
  return reply(SSH_FXP_NAME, 10)
      .u32(2)
      .str("a").str("-rw-r--r-- 1 u g 5 Jan 1 00:00 a")
      .u32(SSH_FILEXFER_ATTR_SIZE | SSH_FILEXFER_ATTR_PERMISSIONS).u64(5).u32(0100644)
      .str("dir").str("")
      .u32(0)
      .bytes();
}
Bytes attrs_reply() {
  return reply(SSH_FXP_ATTRS, 11)
      .u32(0x8000000F).u64(1234).u32(1).u32(2).u32(040700).u32(100).u32(200)
      .u32(1).str("acl@x").str("data")
      .bytes();
}
Bytes extended_reply() { return reply(SSH_FXP_EXTENDED_REPLY, 12).u64(1).u64(2).bytes(); }
Bytes version_packet() {
  return Bytes8().u8(SSH_FXP_VERSION).u32(3).str("posix-rename@openssh.com").str("1").str("statvfs@openssh.com").str("2").bytes();
}

TEST(Replies, StatusWithMessageAndLanguage) {
  const Bytes p = status_full();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->id, 7u);
  const auto& s = std::get<StatusReply>(r->body);
  EXPECT_EQ(s.code, SSH_FX_NO_SUCH_FILE);
  EXPECT_EQ(s.message, "No such file");
  EXPECT_EQ(s.language, "en");
}

TEST(Replies, StatusWithoutMessageOrLanguageIsEmpty) {
  const Bytes bare = reply(SSH_FXP_STATUS, 1).u32(SSH_FX_OK).bytes();
  auto r = parse_reply(view(bare));
  ASSERT_TRUE(r) << r.error().message;
  const auto& s = std::get<StatusReply>(r->body);
  EXPECT_EQ(s.code, SSH_FX_OK);
  EXPECT_EQ(s.message, "");
  EXPECT_EQ(s.language, "");

  const Bytes no_language = reply(SSH_FXP_STATUS, 1).u32(SSH_FX_FAILURE).str("oops").bytes();
  auto r2 = parse_reply(view(no_language));
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(std::get<StatusReply>(r2->body).message, "oops");
  EXPECT_EQ(std::get<StatusReply>(r2->body).language, "");
}

TEST(Replies, Handle) {
  const Bytes p = handle_reply();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->id, 8u);
  EXPECT_EQ(std::get<HandleReply>(r->body).handle, "\x01\x02handle");
}

TEST(Replies, DataPointsIntoThePacket) {
  const Bytes p = data_reply();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  const ByteView d = std::get<DataReply>(r->body).data;
  EXPECT_EQ(std::string(d.begin(), d.end()), "hello");
  EXPECT_EQ(d.data(), p.data() + 9);  // type + id + length: no copy
  const Bytes empty = reply(SSH_FXP_DATA, 1).str("").bytes();
  auto r2 = parse_reply(view(empty));
  ASSERT_TRUE(r2);
  EXPECT_TRUE(std::get<DataReply>(r2->body).data.empty());
}

TEST(Replies, NameWithEntriesAndAttrs) {
  const Bytes p = name_reply();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  const auto& names = std::get<NameReply>(r->body).names;
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].filename, "a");
  EXPECT_EQ(names[0].longname, "-rw-r--r-- 1 u g 5 Jan 1 00:00 a");
  EXPECT_EQ(names[0].attrs, Attrs().set_size(5).set_permissions(0100644));
  EXPECT_EQ(names[1].filename, "dir");
  EXPECT_EQ(names[1].attrs.flags, 0u);

  const Bytes none = reply(SSH_FXP_NAME, 1).u32(0).bytes();
  auto r2 = parse_reply(view(none));
  ASSERT_TRUE(r2);
  EXPECT_TRUE(std::get<NameReply>(r2->body).names.empty());
}

TEST(Replies, AttrsAllFields) {
  const Bytes p = attrs_reply();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  const Attrs& a = std::get<AttrsReply>(r->body).attrs;
  EXPECT_EQ(a.flags, 0x8000000Fu);
  EXPECT_EQ(a.size, 1234u);
  EXPECT_EQ(a.uid, 1u);
  EXPECT_EQ(a.gid, 2u);
  EXPECT_EQ(a.permissions, 040700u);
  EXPECT_EQ(a.atime, 100u);
  EXPECT_EQ(a.mtime, 200u);
  ASSERT_EQ(a.extended.size(), 1u);
  EXPECT_EQ(a.extended[0].first, "acl@x");
  EXPECT_EQ(a.extended[0].second, "data");
}

TEST(Replies, ExtendedFlagWithZeroEntriesIsAccepted) {  // proftpd sends this
  const Bytes p = reply(SSH_FXP_ATTRS, 1).u32(SSH_FILEXFER_ATTR_EXTENDED).u32(0).bytes();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(std::get<AttrsReply>(r->body).attrs.extended.empty());
}

TEST(Replies, ExtendedReplyPayloadIsTheRest) {
  const Bytes p = extended_reply();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->id, 12u);
  const ByteView payload = std::get<ExtendedReply>(r->body).payload;
  EXPECT_EQ(payload.size(), 16u);
  EXPECT_EQ(payload.data(), p.data() + 5);
}

TEST(Replies, ReplyIdPeeksWithoutParsing) {
  for (const Bytes& p : {status_full(), handle_reply(), data_reply(), name_reply(), attrs_reply(), extended_reply()}) {
    auto id = reply_id(view(p));
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, parse_reply(view(p))->id);
  }
  EXPECT_FALSE(reply_id(view(Bytes{})));
  EXPECT_FALSE(reply_id(view(Bytes{SSH_FXP_STATUS, 0, 0, 0})));
  EXPECT_FALSE(reply_id(view(version_packet())));  // VERSION has no id
  EXPECT_FALSE(reply_id(view(Bytes{SSH_FXP_OPEN, 0, 0, 0, 1})));
}

TEST(Replies, UnknownOrRequestTypesAreErrors) {
  for (int type : std::initializer_list<int>{0, SSH_FXP_INIT, SSH_FXP_VERSION, SSH_FXP_OPEN, 100, 106, SSH_FXP_EXTENDED, 202, 255}) {
    const Bytes p = reply(uint8_t(type), 1).u32(0).bytes();
    auto r = parse_reply(view(p));
    ASSERT_FALSE(r) << type;
    EXPECT_EQ(r.error().kind, Error::Kind::protocol);
  }
  EXPECT_FALSE(parse_reply(view(Bytes{})));
}

TEST(Replies, TrailingBytesAreErrors) {
  for (Bytes p : {status_full(), handle_reply(), data_reply(), name_reply(), attrs_reply()}) {
    p.push_back(0);
    auto r = parse_reply(view(p));
    ASSERT_FALSE(r) << int(p[0]);
    EXPECT_EQ(r.error().kind, Error::Kind::protocol);
  }
  // A STATUS with all three fields and then more.
  Bytes p = reply(SSH_FXP_STATUS, 1).u32(0).str("").str("").u8(1).bytes();
  EXPECT_FALSE(parse_reply(view(p)));
}

// Truncating a valid reply at any byte must give an error, never a crash or a read past the end. The
// only exceptions are STATUS cut exactly where its optional message or language begins, which v3 allows.
TEST(Replies, EveryTruncationIsAnErrorNeverACrash) {
  for (const Bytes& full : {status_full(), handle_reply(), data_reply(), name_reply(), attrs_reply()}) {
    for (size_t len = 0; len < full.size(); ++len) {
      // A heap copy of exactly len bytes, so a read past the end would be visible under ASan.
      const Bytes prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(len));
      auto r = parse_reply(view(prefix));
      const bool status_boundary = full[0] == SSH_FXP_STATUS && (len == 9 || len == 9 + 4 + 12);
      EXPECT_EQ(r.has_value(), status_boundary) << "type " << int(full[0]) << " cut at " << len;
      if (!r) {
        EXPECT_EQ(r.error().kind, Error::Kind::protocol);
      }
    }
  }
  // EXTENDED_REPLY's payload is opaque here, so only a cut inside the header fails; its parsers then
  // see the short payload (covered below).
  const Bytes ext = extended_reply();
  for (size_t len = 0; len < 5; ++len) EXPECT_FALSE(parse_reply(ByteView(ext.data(), len)));
}

TEST(Replies, OversizedStringLengthsAreErrors) {
  for (uint32_t len : {6u, 100u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    Bytes handle = reply(SSH_FXP_HANDLE, 1).u32(len).bytes();
    handle.insert(handle.end(), {'a', 'b', 'c', 'd', 'e'});
    EXPECT_FALSE(parse_reply(view(handle))) << len;
    Bytes data = reply(SSH_FXP_DATA, 1).u32(len).bytes();
    data.insert(data.end(), {'a', 'b', 'c', 'd', 'e'});
    EXPECT_FALSE(parse_reply(view(data))) << len;
    const Bytes status = reply(SSH_FXP_STATUS, 1).u32(4).u32(len).bytes();
    EXPECT_FALSE(parse_reply(view(status))) << len;
    const Bytes name = reply(SSH_FXP_NAME, 1).u32(1).u32(len).str("").u32(0).bytes();
    EXPECT_FALSE(parse_reply(view(name))) << len;
  }
}

TEST(Replies, HostileCountsFailFastWithoutAllocating) {
  const auto start = std::chrono::steady_clock::now();
  // A NAME claiming four billion entries in a 30-byte packet.
  const Bytes name = reply(SSH_FXP_NAME, 1).u32(0xFFFFFFFF).str("a").str("b").u32(0).bytes();
  auto r = parse_reply(view(name));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::protocol);
  // One more entry claimed than present.
  const Bytes short_name = reply(SSH_FXP_NAME, 1).u32(2).str("a").str("b").u32(0).bytes();
  EXPECT_FALSE(parse_reply(view(short_name)));
  // ATTRS claiming four billion extended pairs.
  const Bytes attrs = reply(SSH_FXP_ATTRS, 1).u32(SSH_FILEXFER_ATTR_EXTENDED).u32(0xFFFFFFFF).str("k").str("v").bytes();
  EXPECT_FALSE(parse_reply(view(attrs)));
  // Inside a NAME entry, too.
  const Bytes nested =
      reply(SSH_FXP_NAME, 1).u32(1).str("a").str("b").u32(SSH_FILEXFER_ATTR_EXTENDED).u32(0x10000000).bytes();
  EXPECT_FALSE(parse_reply(view(nested)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(Replies, AttrsWithUnknownFlagBitsAreErrors) {
  for (uint32_t bad : {0x10u, 0x20u, 0x40u, 0x100u, 0x40000000u, 0x7FFFFFF0u}) {
    const Bytes p = reply(SSH_FXP_ATTRS, 1).u32(bad).u64(0).u64(0).bytes();
    auto r = parse_reply(view(p));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().kind, Error::Kind::protocol);
    const Bytes in_name = reply(SSH_FXP_NAME, 1).u32(1).str("a").str("b").u32(bad | 1).u64(0).bytes();
    EXPECT_FALSE(parse_reply(view(in_name))) << bad;
  }
}

// Random corruptions of valid replies: whatever happens, it is a value, not a crash.
TEST(Replies, RandomMutationsNeverCrash) {
  std::mt19937 rng(12345);
  const std::vector<Bytes> seeds = {status_full(), handle_reply(), data_reply(), name_reply(), attrs_reply(),
                                    extended_reply(), version_packet()};
  size_t accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    Bytes p = seeds[rng() % seeds.size()];
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits && !p.empty(); ++e) {
      switch (rng() % 3) {
        case 0: p[rng() % p.size()] = uint8_t(rng()); break;
        case 1: p.resize(rng() % (p.size() + 1)); break;
        default: p.insert(p.begin() + static_cast<ptrdiff_t>(rng() % (p.size() + 1)), uint8_t(rng())); break;
      }
    }
    const Bytes exact(p);  // exactly sized heap buffer
    if (parse_reply(view(exact))) ++accepted;
    (void)reply_id(view(exact));
    (void)parse_version(view(exact));
  }
  EXPECT_GT(accepted, 0u);  // the mutator does not only produce garbage
}

// ---- VERSION ----

TEST(Version, ExtensionPairsToTheEnd) {
  auto v = parse_version(view(version_packet()));
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->version, 3u);
  EXPECT_EQ(v->extensions.size(), 2u);
  EXPECT_TRUE(v->has(kExtPosixRename));
  EXPECT_EQ(v->extensions.at(std::string(kExtStatvfs)), "2");
  EXPECT_FALSE(v->has(kExtHardlink));

  auto bare = parse_version(view(Bytes8().u8(SSH_FXP_VERSION).u32(3).bytes()));
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->extensions.empty());
}

TEST(Version, RepeatedNameKeepsTheFirst) {
  auto v = parse_version(view(Bytes8().u8(SSH_FXP_VERSION).u32(3).str("x").str("1").str("x").str("2").bytes()));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->extensions.at("x"), "1");
}

TEST(Version, MalformedIsAnError) {
  EXPECT_FALSE(parse_version(view(Bytes{})));
  EXPECT_FALSE(parse_version(view(Bytes8().u8(SSH_FXP_STATUS).u32(3).bytes())));
  EXPECT_FALSE(parse_version(view(Bytes8().u8(SSH_FXP_VERSION).u32(3).str("name-without-data").bytes())));
  EXPECT_FALSE(parse_version(view(Bytes8().u8(SSH_FXP_VERSION).u32(3).u32(0xFFFFFFFF).bytes())));
  // Truncation: an error except exactly between extension pairs, where the shorter VERSION is valid.
  const Bytes full = version_packet();
  const size_t first_pair_end = 5 + 4 + 24 + 4 + 1;
  for (size_t len = 0; len < full.size(); ++len) {
    const Bytes prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(len));
    auto v = parse_version(view(prefix));
    EXPECT_EQ(v.has_value(), len == 5 || len == first_pair_end) << len;
  }
}

// ---- extended reply payloads ----

TEST(ExtendedPayloads, Limits) {
  const Bytes p = Bytes8().u64(262144).u64(261120).u64(261120).u64(0).bytes();
  auto l = parse_limits(view(p));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->max_packet_length, 262144u);
  EXPECT_EQ(l->max_read_length, 261120u);
  EXPECT_EQ(l->max_write_length, 261120u);
  EXPECT_EQ(l->max_open_handles, 0u);
  for (size_t len = 0; len < p.size(); ++len) EXPECT_FALSE(parse_limits(ByteView(p.data(), len))) << len;
  Bytes longer = p;
  longer.push_back(0);
  EXPECT_FALSE(parse_limits(view(longer)));
}

TEST(ExtendedPayloads, Statvfs) {
  Bytes8 b;
  for (uint64_t v = 1; v <= 11; ++v) b.u64(v * 0x0101010101ULL);
  const Bytes p = b.bytes();
  auto s = parse_statvfs(view(p));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->bsize, 1 * 0x0101010101ULL);
  EXPECT_EQ(s->frsize, 2 * 0x0101010101ULL);
  EXPECT_EQ(s->blocks, 3 * 0x0101010101ULL);
  EXPECT_EQ(s->bfree, 4 * 0x0101010101ULL);
  EXPECT_EQ(s->bavail, 5 * 0x0101010101ULL);
  EXPECT_EQ(s->files, 6 * 0x0101010101ULL);
  EXPECT_EQ(s->ffree, 7 * 0x0101010101ULL);
  EXPECT_EQ(s->favail, 8 * 0x0101010101ULL);
  EXPECT_EQ(s->fsid, 9 * 0x0101010101ULL);
  EXPECT_EQ(s->flag, 10 * 0x0101010101ULL);
  EXPECT_EQ(s->namemax, 11 * 0x0101010101ULL);
  for (size_t len = 0; len < p.size(); ++len) EXPECT_FALSE(parse_statvfs(ByteView(p.data(), len))) << len;
  Bytes longer = p;
  longer.push_back(0);
  EXPECT_FALSE(parse_statvfs(view(longer)));
}

TEST(ExtendedPayloads, UsersGroups) {
  const Bytes users = Bytes8().str("root").str("").str("alice").bytes();
  const Bytes groups = Bytes8().str("wheel").bytes();
  const Bytes p = Bytes8()
                      .str(std::string_view(reinterpret_cast<const char*>(users.data()), users.size()))
                      .str(std::string_view(reinterpret_cast<const char*>(groups.data()), groups.size()))
                      .bytes();
  auto r = parse_users_groups(view(p));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->first, (std::vector<std::string>{"root", "", "alice"}));
  EXPECT_EQ(r->second, (std::vector<std::string>{"wheel"}));
  for (size_t len = 0; len < p.size(); ++len) EXPECT_FALSE(parse_users_groups(ByteView(p.data(), len))) << len;

  auto empty = parse_users_groups(view(Bytes8().u32(0).u32(0).bytes()));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->first.empty());
  EXPECT_TRUE(empty->second.empty());
  // An inner list whose last name is cut short.
  EXPECT_FALSE(parse_users_groups(view(Bytes8().u32(6).u32(5).u8('a').u8('b').u32(0).bytes())));
  EXPECT_FALSE(parse_users_groups(view(Bytes8().u32(0).u32(0).u8(0).bytes())));
}

// ---- Reader itself ----

TEST(Reader, BigEndianAndBounds) {
  const Bytes b{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D};
  Reader r(view(b));
  EXPECT_EQ(r.u8().value(), 0x01);
  EXPECT_EQ(r.u32().value(), 0x02030405u);
  EXPECT_EQ(r.u64().value(), 0x060708090A0B0C0DULL);
  EXPECT_TRUE(r.at_end());
  EXPECT_FALSE(r.u8());
  EXPECT_FALSE(r.u32());
  EXPECT_FALSE(r.u64());
  EXPECT_FALSE(r.string());
  EXPECT_TRUE(r.expect_end("x"));
}

TEST(Reader, FailedReadConsumesNothingUsable) {
  const Bytes b{0, 0, 0};
  Reader r(view(b));
  EXPECT_FALSE(r.u32());
  EXPECT_EQ(r.remaining(), 3u);
  EXPECT_FALSE(r.expect_end("x"));
}

TEST(Reader, CountBoundsByMinimumElementSize) {
  const Bytes b = Bytes8().u32(3).u32(0).u32(0).u32(0).bytes();
  EXPECT_EQ(Reader(view(b)).count(4).value(), 3u);
  EXPECT_FALSE(Reader(view(b)).count(5));
  const Bytes huge = Bytes8().u32(0xFFFFFFFF).bytes();
  EXPECT_FALSE(Reader(view(huge)).count(1));
}

}  // namespace
}  // namespace sftpfs::sftp

namespace sftpfs::sftp {
namespace {

// Hostile servers (issue 10): the decoder reports what was sent, exactly; judging it is the caller's
// (fs/listing_guard.hpp for names, status_to_errno and fs/errno_edge for codes, the client for ids
// and sizes).
TEST(HostileReplies, NamesWithSlashDotsAndNulDecodeVerbatim) {
  const Bytes p = reply(SSH_FXP_NAME, 3)
                      .u32(4)
                      .str("../up").str("").u32(0)
                      .str("a/b").str("").u32(0)
                      .str(std::string("x\0y", 3)).str("").u32(0)
                      .str("").str("").u32(0)
                      .bytes();
  auto r = parse_reply(view(p));
  ASSERT_TRUE(r) << r.error().message;
  const auto& names = std::get<NameReply>(r->body).names;
  ASSERT_EQ(names.size(), 4u);
  EXPECT_EQ(names[0].filename, "../up");
  EXPECT_EQ(names[1].filename, "a/b");
  EXPECT_EQ(names[2].filename, std::string("x\0y", 3));
  EXPECT_EQ(names[3].filename, "");
}

TEST(HostileReplies, StatusCodesOutOfRangeDecodeAndMapToEio) {
  for (uint32_t code : {25u, 77u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    const Bytes p = reply(SSH_FXP_STATUS, 4).u32(code).str("?").str("").bytes();
    auto r = parse_reply(view(p));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(std::get<StatusReply>(r->body).code, code);
    EXPECT_EQ(status_to_errno(code), EIO);
    EXPECT_STREQ(status_name(code), "SSH_FX_UNKNOWN");
  }
}

TEST(HostileReplies, ADataReplyLargerThanAnyReadIsRefusedByLength) {
  // A DATA reply claiming more bytes than the packet holds is an error, never a read past the end.
  const Bytes p = Bytes8().u8(SSH_FXP_DATA).u32(5).u32(1u << 20).u8('x').bytes();
  EXPECT_FALSE(parse_reply(view(p)));
}

TEST(HostileReplies, TheIdOfAnyReplyIsPeekedWithoutTrust) {
  // reply_id only reads; whether the id was ever sent is the connection's question.
  const Bytes p = reply(SSH_FXP_ATTRS, 0xFFFFFFFF).u32(0).bytes();
  auto id = reply_id(view(p));
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, 0xFFFFFFFFu);
}

}  // namespace
}  // namespace sftpfs::sftp
