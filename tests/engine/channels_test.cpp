// Several SFTP channels on one SSH session (ConnectionOptions::channels, -o max_channels): extra
// channels open on first use without another login, each is its own sftp-server with its own
// handles, a cut connection reopens files on their own channels, and a server that refuses another
// channel leaves the connection working. Against a real sshd.
#include <atomic>
#include <future>
#include <random>

#include "engine_fixture.hpp"

namespace sftpfs::test {
namespace {

using client::FileRef;
using client::wait_for;
using namespace std::chrono_literals;

sftp::Bytes random_bytes(size_t size, unsigned seed) {
  std::mt19937 gen(seed);
  sftp::Bytes bytes(size);
  for (auto& b : bytes) b = static_cast<uint8_t>(gen());
  return bytes;
}

constexpr uint32_t kCreate = sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT | sftp::SSH_FXF_TRUNC;

client::ConnectionOptions with_channels(size_t channels) {
  client::ConnectionOptions options;
  options.channels = channels;
  return options;
}

// Writes `data` in 1 MiB pieces to every file at once; cuts the connections after `cut_after`
// pieces of each (0: never). Returns how many pieces failed.
int write_all_at_once(client::Client& c, const std::vector<FileRef>& files, const sftp::Bytes& data, size_t cut_after) {
  constexpr size_t kChunk = 1u << 20;
  std::atomic<int> failures{0}, remaining{int(files.size() * (data.size() / kChunk))};
  std::promise<void> all_done;
  for (size_t off = 0, piece = 1; off < data.size(); off += kChunk, ++piece) {
    for (const auto& file : files)
      c.write(file, off, sftp::Bytes(data.begin() + off, data.begin() + off + kChunk), [&](Status s) {
        if (!s) ++failures;
        if (--remaining == 0) all_done.set_value();
      });
    if (piece == cut_after) c.cut_connections();  // writes in flight on every channel
  }
  if (all_done.get_future().wait_for(120s) != std::future_status::ready) return -1;
  return failures.load();
}

TEST_F(EngineTest, ExtraChannelsOpenOnFirstUseEachItsOwnServer) {
  auto& c = connect(1, with_channels(3));
  ASSERT_EQ(c.connection_count(), 1u);
  ASSERT_EQ(c.lane_count(), 3u);
  ASSERT_TRUE(wait_for<sftp::Attrs>([&](auto cb) { c.stat(dir_, cb); }));
  // Only the first channel until a request names another.
  EXPECT_EQ(server_->sftp_server_pids().size(), 1u);
  EXPECT_EQ(c.status().connections[0].channels_open, 1u);
  const size_t sshd_processes = server_->session_pids().size() - 1;

  std::vector<FileRef> files;
  for (size_t lane = 0; lane < 3; ++lane) {
    auto file = wait_for<FileRef>([&](auto cb) { c.open_on(lane, path("f" + std::to_string(lane)), kCreate, {}, cb); });
    ASSERT_TRUE(file) << "lane " << lane << ": " << file.error().message;
    EXPECT_EQ((*file)->connection, 0u);
    EXPECT_EQ((*file)->channel, lane);
    EXPECT_EQ((*file)->lane, lane);
    files.push_back(*file);
  }
  EXPECT_EQ(server_->sftp_server_pids().size(), 3u);  // one sftp-server per channel, one login
  EXPECT_EQ(server_->session_pids().size(), sshd_processes + 3u) << "an extra channel must not be an extra login";
  EXPECT_EQ(c.status().connections[0].channels_open, 3u);

  const auto data = random_bytes(8u << 20, 11);
  ASSERT_EQ(write_all_at_once(c, files, data, 0), 0);
  for (size_t lane = 0; lane < 3; ++lane) {
    ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(files[lane], cb); }));
    EXPECT_EQ(read_local(path("f" + std::to_string(lane))), std::string(data.begin(), data.end())) << "lane " << lane;
  }

  // A handle belongs to its channel's server: reading through lane 2's handle gives lane 2's file.
  write_local(path("only-on-2"), "two");
  auto on_two = wait_for<FileRef>([&](auto cb) { c.open_on(2, path("only-on-2"), sftp::SSH_FXF_READ, {}, cb); });
  ASSERT_TRUE(on_two);
  auto bytes = wait_for<sftp::Bytes>([&](auto cb) { c.read(*on_two, 0, 100, cb); });
  ASSERT_TRUE(bytes) << bytes.error().message;
  EXPECT_EQ(std::string(bytes->begin(), bytes->end()), "two");
}

TEST_F(EngineTest, CutUnderWritesOnEveryChannelReopensEachOnItsOwnChannel) {
  auto& c = connect(1, with_channels(3));
  std::vector<FileRef> files;
  for (size_t lane = 0; lane < 3; ++lane) {
    auto file = wait_for<FileRef>([&](auto cb) { c.open_on(lane, path("f" + std::to_string(lane)), kCreate, {}, cb); });
    ASSERT_TRUE(file) << file.error().message;
    files.push_back(*file);
  }
  const auto data = random_bytes(16u << 20, 5);
  ASSERT_EQ(write_all_at_once(c, files, data, 6), 0);
  EXPECT_GE(c.status().connections[0].reconnects, 1u);
  for (size_t lane = 0; lane < 3; ++lane) {
    EXPECT_TRUE(files[lane]->reopened()) << "lane " << lane;
    EXPECT_FALSE(files[lane]->lost()) << "lane " << lane;
    ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(files[lane], cb); }));
    EXPECT_EQ(read_local(path("f" + std::to_string(lane))), std::string(data.begin(), data.end())) << "lane " << lane;
  }
  EXPECT_EQ(c.status().connections[0].channels_open, 3u);
}

// The contract the filesystem's write stripes rely on: an extra handle that has not written yet is
// checked at a reconnect like any file (its size moved: lost), unless it was marked as written, as
// the filesystem marks every stripe of a stream it is writing.
TEST_F(EngineTest, AStripeNotYetWrittenSurvivesAReconnectOnlyWhenMarkedAsWriting) {
  auto& c = connect(1, with_channels(3));
  auto first = wait_for<FileRef>([&](auto cb) { c.open_on(0, path("s"), kCreate, {}, cb); });
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.write(*first, 0, random_bytes(1u << 20, 1), cb); }));
  auto marked = wait_for<FileRef>([&](auto cb) { c.open_on(1, path("s"), sftp::SSH_FXF_WRITE, {}, cb); });
  auto unmarked = wait_for<FileRef>([&](auto cb) { c.open_on(2, path("s"), sftp::SSH_FXF_WRITE, {}, cb); });
  ASSERT_TRUE(marked && unmarked);
  (*marked)->note_write();
  // The first handle grows the file; then the connection drops before the stripes wrote anything.
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.write(*first, 1u << 20, random_bytes(1u << 20, 2), cb); }));
  c.cut_connections();
  auto written = wait_for<void>([&](auto cb) { c.write(*marked, 2u << 20, random_bytes(4096, 3), cb); });
  EXPECT_TRUE(written) << written.error().message;
  EXPECT_FALSE((*marked)->lost());
  EXPECT_TRUE((*unmarked)->lost());
  EXPECT_FALSE((*first)->lost());
}

TEST(EngineChannels, ARefusedChannelFailsItsRequestsAndKeepsTheConnection) {
  ssh::global_init();
  TestServer server({"MaxSessions 1"});
  const std::string dir = server.make_remote_dir("refused");
  client::ClientOptions options;
  options.connection.channels = 2;
  auto client = client::Client::connect(session_options(server), options);
  ASSERT_TRUE(client) << client.error().message;
  auto& c = **client;
  auto refused = wait_for<FileRef>([&](auto cb) { c.open_on(1, dir + "/x", kCreate, {}, cb); });
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, Error::Kind::unsupported) << refused.error().message;
  // Later requests on that channel fail at once the same way; channel 0 goes on working.
  auto again = wait_for<FileRef>([&](auto cb) { c.open_on(1, dir + "/x", kCreate, {}, cb); });
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, Error::Kind::unsupported);
  auto file = wait_for<FileRef>([&](auto cb) { c.open_on(0, dir + "/x", kCreate, {}, cb); });
  ASSERT_TRUE(file) << file.error().message;
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.write(*file, 0, sftp::Bytes{'o', 'k'}, cb); }));
  ASSERT_TRUE(wait_for<void>([&](auto cb) { c.close(*file, cb); }));
  EXPECT_TRUE(c.alive());
  EXPECT_EQ(c.status().connections[0].reconnects, 0u);
  EXPECT_EQ(c.status().connections[0].channels_open, 1u);
}

}  // namespace
}  // namespace sftpfs::test
