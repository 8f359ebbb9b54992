// WriteOrder without a server: where writes and reads go, and what waits for what.
#include "fs/write_order.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace sftpfs::fs {
namespace {

struct Sent {
  std::string what;
  size_t connection;
  WriteOrder::Token token;
};

struct Recorder {
  WriteOrder order;
  std::vector<Sent> sent;
  void write(uint64_t ino, uint64_t b, uint64_t e, std::vector<size_t> usable, size_t preferred, std::string name) {
    order.write(ino, b, e, std::move(usable), preferred,
                [this, name](size_t c, WriteOrder::Token t) { sent.push_back({name, c, t}); });
  }
  void read(uint64_t ino, uint64_t b, uint64_t e, size_t connection, std::string name) {
    order.read(ino, b, e, connection, [this, name, connection] { sent.push_back({name, connection, 0}); });
  }
  const Sent* find(const std::string& name) const {
    for (const auto& s : sent)
      if (s.what == name) return &s;
    return nullptr;
  }
};

TEST(WriteOrder, DisjointWritesGoWhereTheCallerPrefers) {
  Recorder r;
  r.write(1, 0, 100, {0, 1, 2}, 0, "a");
  r.write(1, 100, 200, {0, 1, 2}, 1, "b");  // adjacent is not overlapping
  r.write(1, 200, 300, {0, 1, 2}, 2, "c");
  ASSERT_EQ(r.sent.size(), 3u);
  EXPECT_EQ(r.sent[0].connection, 0u);
  EXPECT_EQ(r.sent[1].connection, 1u);
  EXPECT_EQ(r.sent[2].connection, 2u);
  EXPECT_EQ(r.order.writes_in_flight(1), 3u);
}

TEST(WriteOrder, AnOverlappingWriteFollowsTheRangeOntoItsConnection) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 1, "a");
  r.write(1, 50, 150, {0, 1}, 0, "b");  // prefers 0, but must go behind "a" on 1
  ASSERT_EQ(r.sent.size(), 2u);
  EXPECT_EQ(r.find("b")->connection, 1u);
}

TEST(WriteOrder, OtherInodesAreIndependent) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 1, "a");
  r.write(2, 0, 100, {0, 1}, 0, "b");
  EXPECT_EQ(r.find("b")->connection, 0u);
}

TEST(WriteOrder, OverlapsOnTwoConnectionsWaitForBoth) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 0, "a");
  r.write(1, 100, 200, {0, 1}, 1, "b");
  r.write(1, 50, 150, {0, 1}, 0, "c");
  EXPECT_EQ(r.find("c"), nullptr);
  EXPECT_EQ(r.order.waiting(1), 1u);
  r.order.complete(1, r.find("a")->token);
  // Now it overlaps only "b" on connection 1: it goes behind it there.
  ASSERT_NE(r.find("c"), nullptr);
  EXPECT_EQ(r.find("c")->connection, 1u);
}

TEST(WriteOrder, AWriteWaitsWhenItHasNoHandleOnTheOverlappingConnection) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 1, "a");   // one handle, striped onto connection 1
  r.write(1, 10, 20, {0}, 0, "b");      // another handle of the file, only on connection 0
  EXPECT_EQ(r.find("b"), nullptr);
  r.order.complete(1, r.find("a")->token);
  ASSERT_NE(r.find("b"), nullptr);
  EXPECT_EQ(r.find("b")->connection, 0u);
}

TEST(WriteOrder, LaterRequestsOverlappingAWaiterQueueBehindIt) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 0, "a");
  r.write(1, 100, 200, {0, 1}, 1, "b");
  r.write(1, 50, 150, {0, 1}, 0, "c");   // waits (two connections)
  r.write(1, 140, 145, {0, 1}, 1, "d");  // overlaps only "b" in flight, but also waiting "c": waits
  r.write(1, 500, 600, {0, 1}, 0, "e");  // overlaps nothing: goes
  EXPECT_EQ(r.find("d"), nullptr);
  EXPECT_NE(r.find("e"), nullptr);
  r.order.complete(1, r.find("b")->token);
  // "c" now overlaps only "a" (connection 0) and goes there; "d" overlaps "c": behind it on 0.
  ASSERT_NE(r.find("c"), nullptr);
  ASSERT_NE(r.find("d"), nullptr);
  EXPECT_EQ(r.find("c")->connection, 0u);
  EXPECT_EQ(r.find("d")->connection, 0u);
  // Sent in that order.
  size_t ci = 0, di = 0;
  for (size_t i = 0; i < r.sent.size(); ++i) {
    if (r.sent[i].what == "c") ci = i;
    if (r.sent[i].what == "d") di = i;
  }
  EXPECT_LT(ci, di);
}

TEST(WriteOrder, ReadsWaitForOverlappingWritesOnOtherConnections) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 1, "a");
  r.read(1, 200, 300, 0, "far");    // no overlap: at once
  r.read(1, 50, 60, 1, "same");     // same connection: at once, behind the write
  r.read(1, 50, 60, 0, "other");    // another connection: waits
  EXPECT_NE(r.find("far"), nullptr);
  EXPECT_NE(r.find("same"), nullptr);
  EXPECT_EQ(r.find("other"), nullptr);
  r.order.complete(1, r.find("a")->token);
  EXPECT_NE(r.find("other"), nullptr);
  EXPECT_EQ(r.order.writes_in_flight(1), 0u);
  EXPECT_EQ(r.order.waiting(1), 0u);
}

TEST(WriteOrder, AWriteDoesNotOvertakeAWaitingRead) {
  Recorder r;
  r.write(1, 0, 100, {0, 1}, 1, "a");
  r.read(1, 0, 100, 0, "read");          // waits for "a"
  r.write(1, 0, 100, {0, 1}, 0, "b");    // must not be sent before the read
  EXPECT_EQ(r.find("b"), nullptr);
  r.order.complete(1, r.find("a")->token);
  ASSERT_NE(r.find("read"), nullptr);
  ASSERT_NE(r.find("b"), nullptr);
  EXPECT_LT(r.find("read") - r.sent.data(), r.find("b") - r.sent.data());
}

TEST(WriteOrder, ASendThatCompletesAtOnceIsSafe) {
  // A dead connection answers on the submitting thread: complete() from inside a send.
  WriteOrder order;
  std::vector<std::string> sent;
  order.write(1, 0, 10, {0}, 0, [&](size_t, WriteOrder::Token t) {
    sent.push_back("a");
    order.complete(1, t);
  });
  order.write(1, 0, 10, {0}, 0, [&](size_t, WriteOrder::Token t) {
    sent.push_back("b");
    order.complete(1, t);
  });
  EXPECT_EQ(sent, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(order.writes_in_flight(1), 0u);
}

// Random workload against a model: simulated connections deliver in order per connection but in
// any order across connections; the final bytes must equal applying the writes in issue order.
TEST(WriteOrder, RandomWorkloadNeverReordersOverlappingWrites) {
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    WriteOrder order;
    constexpr size_t kConns = 3, kSize = 64;
    std::vector<int> expected(kSize, 0), server(kSize, 0);
    struct Pending {
      WriteOrder::Token token;
      uint64_t b, e;
      int value;
    };
    std::vector<std::deque<Pending>> queues(kConns);
    int next_value = 1;
    auto deliver_one = [&] {
      std::vector<size_t> busy;
      for (size_t c = 0; c < kConns; ++c)
        if (!queues[c].empty()) busy.push_back(c);
      if (busy.empty()) return false;
      size_t c = busy[rng() % busy.size()];
      Pending p = queues[c].front();
      queues[c].pop_front();
      for (uint64_t i = p.b; i < p.e; ++i) server[i] = p.value;
      order.complete(1, p.token);
      return true;
    };
    for (int step = 0; step < 300; ++step) {
      if (rng() % 3 == 0) {
        deliver_one();
        continue;
      }
      uint64_t b = rng() % kSize, len = 1 + rng() % 16;
      uint64_t e = std::min<uint64_t>(kSize, b + len);
      int value = next_value++;
      for (uint64_t i = b; i < e; ++i) expected[i] = value;
      std::vector<size_t> usable = (rng() % 2) ? std::vector<size_t>{0, 1, 2} : std::vector<size_t>{rng() % kConns};
      size_t preferred = usable[rng() % usable.size()];
      order.write(1, b, e, usable, preferred, [&, b, e, value](size_t c, WriteOrder::Token t) {
        queues[c].push_back({t, b, e, value});
      });
    }
    while (deliver_one()) {
    }
    ASSERT_EQ(order.waiting(1), 0u) << "seed " << seed;
    ASSERT_EQ(server, expected) << "seed " << seed;
  }
}

}  // namespace
}  // namespace sftpfs::fs
