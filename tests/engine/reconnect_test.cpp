// A link that survives: idle past every timeout, cut under reads and writes, cut under operations
// that are not idempotent, a server gone for good, shutdown while reconnecting. Against a real sshd.
#include <sys/stat.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>

#include "engine_fixture.hpp"

namespace sftpfs::test {
namespace {

using client::FileRef;
using client::wait_for;
using namespace std::chrono_literals;

bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (predicate()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return predicate();
}

sftp::Bytes random_bytes(size_t size, unsigned seed) {
  std::mt19937 gen(seed);
  sftp::Bytes bytes(size);
  for (auto& b : bytes) b = static_cast<uint8_t>(gen());
  return bytes;
}

// The regression test for "idle 75 s, then every call fails": the first request after an idle
// time longer than the request timeout used to fail at once, because the link's silence was
// measured from the last reply instead of from when we began waiting. Reconnect is off here, so
// only the liveness rule itself is tested.
TEST_F(EngineTest, IdleLongerThanEveryTimeoutThenRequestSucceeds) {
  client::ConnectionOptions options;
  options.request_timeout = 1s;  // dead after 4 s owed (two probes), idle probe only after 15 s
  auto& c = connect(1, options, no_reconnect());
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  std::this_thread::sleep_for(5s);  // idle past the request timeout and the dead-link bound
  auto after = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_TRUE(c.alive());
}

TEST_F(EngineTest, CutUnderWritesAndReadsEndsByteIdentical) {
  auto& c = connect();
  const auto data = random_bytes(24u << 20, 7);
  auto file = wait_for<FileRef>([&](auto cb) {
    c.open(path("out"), sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT | sftp::SSH_FXF_TRUNC, {}, cb);
  });
  ASSERT_TRUE(file) << file.error().message;
  constexpr size_t kChunk = 1u << 20;
  std::atomic<int> failures{0}, remaining{int(data.size() / kChunk)};
  std::promise<void> all_done;
  for (size_t off = 0; off < data.size(); off += kChunk) {
    c.write(*file, off, sftp::Bytes(data.begin() + off, data.begin() + off + kChunk), [&](Status s) {
      if (!s) ++failures;
      if (--remaining == 0) all_done.set_value();
    });
    if (off == 8 * kChunk || off == 16 * kChunk) c.cut_connections();  // writes in flight both times
  }
  ASSERT_EQ(all_done.get_future().wait_for(60s), std::future_status::ready);
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE(wait_for<bool>([&](auto cb) { c.close(*file, [cb](Status s) { cb(bool(s)); }); }));
  EXPECT_EQ(read_local(path("out")), std::string(data.begin(), data.end()));
  EXPECT_GE(c.status().connections[0].reconnects, 1u);

  // Reads in flight at a cut come back with the right bytes.
  auto in = wait_for<FileRef>([&](auto cb) { c.open(path("out"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(in);
  std::vector<std::future<Result<sftp::Bytes>>> reads;
  std::vector<std::shared_ptr<std::promise<Result<sftp::Bytes>>>> promises;
  for (size_t off = 0; off < data.size(); off += kChunk) {
    auto p = std::make_shared<std::promise<Result<sftp::Bytes>>>();
    reads.push_back(p->get_future());
    c.read(*in, off, kChunk, [p](Result<sftp::Bytes> r) { p->set_value(std::move(r)); });
    if (off == 4 * kChunk) c.cut_connections();
  }
  for (size_t i = 0; i < reads.size(); ++i) {
    ASSERT_EQ(reads[i].wait_for(60s), std::future_status::ready);
    auto r = reads[i].get();
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_TRUE(std::equal(r->begin(), r->end(), data.begin() + i * kChunk)) << "chunk " << i;
  }
}

TEST_F(EngineTest, IdleCutIsRepairedBeforeTheNextCall) {
  auto& c = connect();
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  c.cut_connections();
  ASSERT_TRUE(wait_until([&] { return c.status().connections[0].reconnects == 1 && c.alive(); }, 10s));
  auto after = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  ASSERT_TRUE(after) << after.error().message;
}

// A cut right behind each non-idempotent request: some ran before the drop and are replayed; none
// may report EEXIST or ENOENT for work that was done.
TEST_F(EngineTest, NonIdempotentRequestsCutMidwayAreCheckedNotRepeatedBlindly) {
  auto& c = connect();
  constexpr int kRounds = 48;
  for (int i = 0; i < kRounds; ++i) {
    const std::string d = path("d" + std::to_string(i)), f = path("f" + std::to_string(i));
    write_local(f, "x");
    std::promise<Status> made, removed, renamed;
    c.mkdir(d, {}, [&](Status s) { made.set_value(std::move(s)); });
    c.remove(f, [&](Status s) { removed.set_value(std::move(s)); });
    c.rename(d, d + "-moved", [&](Status s) { renamed.set_value(std::move(s)); });
    std::this_thread::sleep_for(std::chrono::microseconds(75 * i));  // cut at different points
    c.cut_connections();
    auto m = made.get_future().get(), r = removed.get_future().get(), n = renamed.get_future().get();
    EXPECT_TRUE(m) << "round " << i << " mkdir: " << m.error().message;
    EXPECT_TRUE(r) << "round " << i << " remove: " << r.error().message;
    EXPECT_TRUE(n) << "round " << i << " rename: " << n.error().message;
    struct stat st {};
    EXPECT_EQ(::stat((d + "-moved").c_str(), &st), 0) << "round " << i;
    EXPECT_NE(::stat(f.c_str(), &st), 0) << "round " << i;
  }
}

TEST_F(EngineTest, OpenFileChangedOnTheServerIsLostNotMixed) {
  auto& c = connect();
  write_local(path("a"), std::string(1000, 'a'));
  write_local(path("b"), std::string(1000, 'b'));
  write_local(path("gone"), "x");
  auto a = wait_for<FileRef>([&](auto cb) { c.open(path("a"), sftp::SSH_FXF_READ, {}, cb); });
  auto b = wait_for<FileRef>([&](auto cb) { c.open(path("b"), sftp::SSH_FXF_READ, {}, cb); });
  auto gone = wait_for<FileRef>([&](auto cb) { c.open(path("gone"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(a && b && gone);
  ASSERT_TRUE(wait_for<bool>([&](auto cb) { c.remove(path("gone"), [cb](Status s) { cb(bool(s)); }); }));
  // Another client replaces b's content with a different size while we hold it open.
  write_local(path("b"), std::string(10, 'B'));
  ASSERT_TRUE(wait_until([&] { return (*b)->seen().has_value(); }, 5s));
  c.cut_connections();
  auto ra = wait_for<sftp::Bytes>([&](auto cb) { c.read(*a, 0, 100, cb); });
  ASSERT_TRUE(ra) << ra.error().message;
  EXPECT_EQ(std::string(ra->begin(), ra->end()), std::string(100, 'a'));
  auto rb = wait_for<sftp::Bytes>([&](auto cb) { c.read(*b, 0, 100, cb); });
  ASSERT_FALSE(rb);
  EXPECT_EQ(rb.error().code, uint32_t(EIO)) << rb.error().message;
  auto rg = wait_for<sftp::Bytes>([&](auto cb) { c.read(*gone, 0, 1, cb); });
  ASSERT_FALSE(rg);
  EXPECT_NE(rg.error().message.find("deleted"), std::string::npos) << rg.error().message;
}

TEST_F(EngineTest, ServerGoneCallsFailWithinTheWaitThenShutdownIsPrompt) {
  client::LinkOptions link;
  link.wait = 2s;
  auto& c = connect(1, {}, link);
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  server_->kill_server();
  ASSERT_TRUE(wait_until([&] { return !c.alive(); }, 10s));
  auto started = std::chrono::steady_clock::now();
  auto r = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  auto waited = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, Error::Kind::unreachable) << r.error().message;
  EXPECT_GE(waited, 1800ms);
  EXPECT_LT(waited, 4s);
  EXPECT_EQ(c.status().connections[0].state, client::ConnectionStatus::State::reconnecting);
  started = std::chrono::steady_clock::now();
  c.shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1500ms);
}

TEST_F(EngineTest, FrozenSessionIsReplacedAndTheCallCompletes) {
  client::ConnectionOptions options;
  options.request_timeout = 2s;  // dead after 4 s without any answer
  auto& c = connect(1, options);
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  server_->freeze_sessions();  // the old session stops answering; new ones work
  auto started = std::chrono::steady_clock::now();
  auto r = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  auto took = std::chrono::steady_clock::now() - started;
  server_->thaw_sessions();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_GE(took, 3s);
  EXPECT_LT(took, 10s);
  EXPECT_EQ(c.status().connections[0].reconnects, 1u);
}

}  // namespace
}  // namespace sftpfs::test
