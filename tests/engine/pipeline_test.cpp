// Throughput and failure behaviour: many requests in flight, large transfers hashed end to end, and a
// server that dies, freezes or talks nonsense: every caller gets an answer within its deadline.
#include <openssl/evp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <future>
#include <random>

#include "engine_fixture.hpp"

namespace sftpfs::test {
namespace {

using client::FileRef;
using client::wait_for;
using namespace std::chrono_literals;

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  void update(const uint8_t* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  std::string hex() {
    unsigned char digest[32];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_, digest, &length);
    std::string out;
    char byte[3];
    for (unsigned i = 0; i < length; ++i) {
      snprintf(byte, sizeof byte, "%02x", digest[i]);
      out += byte;
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

TEST_F(EngineTest, TenThousandPipelinedStats) {
  auto& c = connect();
  for (int i = 0; i < 100; ++i) write_local(path("f" + std::to_string(i)), std::string(i, 'x'));
  constexpr int kCount = 10000;
  std::atomic<int> ok{0}, failed{0}, size_mismatch{0};
  std::promise<void> all_done;
  std::atomic<int> remaining{kCount};
  for (int i = 0; i < kCount; ++i) {
    int n = i % 100;
    c.stat(path("f" + std::to_string(n)), [&, n](Result<sftp::Attrs> attrs) {
      if (!attrs) ++failed;
      else if (attrs->size != static_cast<uint64_t>(n)) ++size_mismatch;
      else ++ok;
      if (--remaining == 0) all_done.set_value();
    });
  }
  ASSERT_EQ(all_done.get_future().wait_for(120s), std::future_status::ready);
  EXPECT_EQ(ok.load(), kCount);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(size_mismatch.load(), 0);
}

TEST_F(EngineTest, LargeFileReadAndWriteMatchSha256) {
  auto& c = connect();
  constexpr uint64_t kSize = 256ull << 20;
  constexpr uint32_t kChunk = 8u << 20;
  ASSERT_EQ(run_shell("head -c " + std::to_string(kSize) + " /dev/urandom > " + path("big")), 0);
  const std::string expected = sha256_file(path("big"));

  auto file = wait_for<FileRef>([&](auto cb) { c.open(path("big"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(file);
  Sha256 read_hash;
  uint64_t total = 0;
  for (;;) {
    auto bytes = wait_for<sftp::Bytes>([&](auto cb) { c.read(*file, total, kChunk, cb); });
    ASSERT_TRUE(bytes) << bytes.error().message;
    if (bytes->empty()) break;
    read_hash.update(bytes->data(), bytes->size());
    total += bytes->size();
  }
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*file, cb); }));
  EXPECT_EQ(total, kSize);
  EXPECT_EQ(read_hash.hex(), expected);

  auto out = wait_for<FileRef>([&](auto cb) {
    c.open(path("written"), sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT | sftp::SSH_FXF_TRUNC, {}, cb);
  });
  ASSERT_TRUE(out);
  std::mt19937_64 random(42);
  Sha256 write_hash;
  // Four chunks in flight at a time: the engine pipelines within and across calls.
  std::vector<std::future<Status>> in_flight;
  for (uint64_t offset = 0; offset < kSize; offset += kChunk) {
    sftp::Bytes chunk(kChunk);
    for (size_t i = 0; i < chunk.size(); i += 8) {
      uint64_t value = random();
      std::memcpy(chunk.data() + i, &value, 8);
    }
    write_hash.update(chunk.data(), chunk.size());
    auto promise = std::make_shared<std::promise<Status>>();
    in_flight.push_back(promise->get_future());
    c.write(*out, offset, std::move(chunk), [promise](Status st) { promise->set_value(std::move(st)); });
    if (in_flight.size() >= 4) {
      auto st = in_flight.front().get();
      ASSERT_TRUE(st) << st.error().message;
      in_flight.erase(in_flight.begin());
    }
  }
  for (auto& f : in_flight) {
    auto st = f.get();
    ASSERT_TRUE(st) << st.error().message;
  }
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*out, cb); }));
  EXPECT_EQ(sha256_file(path("written")), write_hash.hex());
}

// Large READs are received straight into the caller's buffer (Sink), among small replies that go
// through the connection's buffer: stats, and reads too small to receive in place, all in flight at
// once on the one channel. Every byte lands where it belongs.
TEST_F(EngineTest, LargeReadsAreReceivedInPlaceAmongSmallRepliesAndExact) {
  auto& c = connect();
  constexpr uint64_t kSize = 32ull << 20;
  ASSERT_EQ(run_shell("head -c " + std::to_string(kSize) + " /dev/urandom > " + path("mixed")), 0);
  std::string expected;
  {
    std::ifstream in(path("mixed"), std::ios::binary);
    expected.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_EQ(expected.size(), kSize);
  auto file = wait_for<FileRef>([&](auto cb) { c.open(path("mixed"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(file);

  struct Outcome {
    uint64_t offset;
    std::future<Result<sftp::Bytes>> bytes;
  };
  std::vector<Outcome> reads;
  std::vector<std::future<Result<sftp::Attrs>>> stats;
  std::mt19937_64 random(7);
  auto read_at = [&](uint64_t offset, uint32_t length) {
    auto promise = std::make_shared<std::promise<Result<sftp::Bytes>>>();
    reads.push_back({offset, promise->get_future()});
    c.read(*file, offset, length, [promise](Result<sftp::Bytes> r) { promise->set_value(std::move(r)); });
  };
  for (uint64_t offset = 0; offset < kSize; offset += 1u << 20) {
    read_at(offset, 1u << 20);  // four 255 KiB READs and a short one: in place
    read_at(random() % (kSize - 4096), 4096);  // through the buffer
    auto promise = std::make_shared<std::promise<Result<sftp::Attrs>>>();
    stats.push_back(promise->get_future());
    c.stat(dir_, [promise](Result<sftp::Attrs> r) { promise->set_value(std::move(r)); });
  }
  for (auto& read : reads) {
    auto bytes = read.bytes.get();
    ASSERT_TRUE(bytes) << bytes.error().message;
    ASSERT_EQ(std::string(bytes->begin(), bytes->end()), expected.substr(read.offset, bytes->size()))
        << "at " << read.offset;
    EXPECT_EQ(bytes->size(), std::min<uint64_t>(bytes->size(), kSize - read.offset));
  }
  for (auto& st : stats) {
    auto attrs = st.get();
    ASSERT_TRUE(attrs) << attrs.error().message;
  }
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*file, cb); }));
  // Nearly all of the large reads' data came in place: at most a DATA header's read per reply
  // through the buffer, and the small reads.
  const auto status = c.status().connections[0];
  EXPECT_GE(status.bytes_received_in_place, kSize * 95 / 100) << "of " << status.bytes_received;
}

TEST_F(EngineTest, TwoConnectionsShareTheWork) {
  auto& c = connect(2);
  ASSERT_EQ(c.connection_count(), 2u);
  write_local(path("x"), "data");
  auto a = wait_for<FileRef>([&](auto cb) { c.open_on(0, path("x"), sftp::SSH_FXF_READ, {}, cb); });
  auto b = wait_for<FileRef>([&](auto cb) { c.open_on(1, path("x"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(a && b);
  EXPECT_EQ((*a)->connection, 0u);
  EXPECT_EQ((*b)->connection, 1u);
  for (auto& f : {*a, *b}) {
    auto bytes = wait_for<sftp::Bytes>([&](auto cb) { c.read(f, 0, 100, cb); });
    ASSERT_TRUE(bytes);
    EXPECT_EQ(std::string(bytes->begin(), bytes->end()), "data");
    ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(f, cb); }));
  }
}

// Waits for `count` callbacks; returns how many failed, or -1 if not all arrived by `limit`.
struct Completions {
  explicit Completions(int count) : remaining(count) {}
  std::atomic<int> remaining, failures{0};
  std::promise<void> done;
  void complete(bool ok) {
    if (!ok) ++failures;
    if (--remaining == 0) done.set_value();
  }
  int wait(std::chrono::seconds limit) {
    return done.get_future().wait_for(limit) == std::future_status::ready ? failures.load() : -1;
  }
};

TEST_F(EngineTest, ServerKilledMidTransferFailsEveryPendingRequest) {
  client::ConnectionOptions options;
  options.request_timeout = 5s;
  auto& c = connect(1, options, no_reconnect());  // the failure itself, as a noreconnect mount sees it
  ASSERT_EQ(run_shell("head -c 64M /dev/zero > " + path("zeros")), 0);
  auto file = wait_for<FileRef>([&](auto cb) { c.open(path("zeros"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(file);
  constexpr int kReads = 256;
  Completions completions(kReads);
  for (int i = 0; i < kReads; ++i)
    c.read(*file, uint64_t(i % 64) << 20, 1u << 20, [&](Result<sftp::Bytes> r) { completions.complete(bool(r)); });
  server_->kill_server();
  auto started = std::chrono::steady_clock::now();
  int failures = completions.wait(15s);
  ASSERT_GE(failures, 0) << "some requests never completed";
  EXPECT_GT(failures, 0) << "the server was killed while reads were in flight";
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  EXPECT_FALSE(c.alive());
  // Later requests fail at once, not after a timeout.
  auto late = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  EXPECT_FALSE(late);
}

TEST_F(EngineTest, FrozenServerFailsRequestsWithinTheirDeadline) {
  client::ConnectionOptions options;
  options.request_timeout = 2s;
  auto& c = connect(1, options, no_reconnect());
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  server_->freeze_sessions();  // no FIN, no RST: as a black-holed network looks
  Completions completions(50);
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) c.stat(dir_, [&](Result<sftp::Attrs> r) { completions.complete(bool(r)); });
  int failures = completions.wait(20s);
  ASSERT_EQ(failures, 50);
  auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_GE(elapsed, 1s);
  EXPECT_LT(elapsed, 8s);
  EXPECT_FALSE(c.alive());
  server_->thaw_sessions();
}

TEST_F(EngineTest, SlowServerTimesOutOneRequestAndKeepsTheConnection) {
  client::ConnectionOptions options;
  options.request_timeout = 5s;  // keepalives go at most every 2 s: at least two answered in time
  auto& c = connect(1, options);
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  auto sftp_servers = server_->sftp_server_pids();
  ASSERT_EQ(sftp_servers.size(), 1u);
  ::kill(sftp_servers[0], SIGSTOP);  // sshd still answers keepalives: the server is slow, not gone
  auto started = std::chrono::steady_clock::now();
  auto stuck = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  ASSERT_FALSE(stuck);
  EXPECT_EQ(stuck.error().kind, Error::Kind::timeout);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  EXPECT_TRUE(c.alive());
  ::kill(sftp_servers[0], SIGCONT);
  // The late reply to the timed-out request is dropped; the connection goes on working.
  auto after = wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); });
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_TRUE(c.alive());
}

// A real sshd whose sftp subsystem answers INIT correctly and then sends a packet with an absurd length.
TEST(EngineMalformed, MalformedReplyFailsTheConnectionCleanly) {
  ssh::global_init();
  char script_dir[] = "/tmp/sftpfs-bad-sftp-XXXXXX";
  ASSERT_NE(mkdtemp(script_dir), nullptr);
  std::string script = std::string(script_dir) + "/bad-sftp-server";
  {
    std::ofstream out(script);
    out << "#!/bin/bash\n"
           "head -c 9 >/dev/null                       # INIT\n"
           "printf '\\x00\\x00\\x00\\x05\\x02\\x00\\x00\\x00\\x03'  # VERSION 3, no extensions\n"
           "head -c 4 >/dev/null; sleep 0.2\n"
           "printf '\\xff\\xff\\xff\\xf0\\x65\\x00\\x00\\x00\\x02'  # a 4 GiB 'packet'\n"
           "sleep 5\n";
  }
  ::chmod(script.c_str(), 0755);
  ::setenv("TEST_SSHD_SFTP_SERVER", script.c_str(), 1);
  auto server = std::make_unique<TestServer>();
  ::unsetenv("TEST_SSHD_SFTP_SERVER");
  client::ClientOptions options;
  options.connection.request_timeout = 10s;
  auto client = client::Client::connect(session_options(*server), options);
  ASSERT_TRUE(client) << client.error().message;
  auto st = wait_for<sftp::Attrs>([&](auto cb) { (*client)->stat("/", cb); });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, Error::Kind::protocol);
  EXPECT_NE(st.error().message.find("invalid length"), std::string::npos) << st.error().message;
  EXPECT_FALSE((*client)->alive());
  client->reset();
  server.reset();
  run_shell(std::string("rm -rf ") + script_dir);
}

}  // namespace
}  // namespace sftpfs::test
