// --status: the report's text from a hand-made snapshot, the socket name, and a round trip through
// the abstract socket (server and client in this process).
#include "cli/status.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>

namespace sftpfs::cli {
namespace {

using namespace std::chrono_literals;

StatusSnapshot sample() {
  StatusSnapshot s;
  s.mountpoint = "/mnt/data";
  s.source = "alice@example.org:/srv";
  s.pid = 4242;
  s.now = std::chrono::system_clock::time_point(std::chrono::hours(24 * 20000));
  s.mounted_at = s.now - 3h - 25min;
  client::ConnectionStatus up;
  up.state = client::ConnectionStatus::State::connected;
  up.since = s.now - 95s;
  up.reconnects = 2;
  up.rtt = 1250us;
  up.in_flight = 17;
  up.bytes_sent = 2048;
  up.bytes_received = 3u << 20;
  up.bytes_received_in_place = 2u << 20;
  up.last_error = "the server closed the connection";
  client::ConnectionStatus down;
  down.state = client::ConnectionStatus::State::reconnecting;
  down.since = s.now - 4s;
  down.attempts = 3;
  down.held = 5;
  s.client.connections = {up, down};
  s.fs.caches = {{"attributes", 90, 10, 120}, {"listings", 0, 0, 0}};
  s.fs.prefetch_used = 12u << 20;
  s.fs.prefetch_budget = 96u << 20;
  s.fs.write_behind_used = 0;
  s.fs.write_behind_budget = 64u << 20;
  s.fs.inodes = 321;
  s.resident_bytes = 40u << 20;
  return s;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(StatusReport, ShowsEveryPart) {
  std::string text = format_status(sample());
  EXPECT_TRUE(has(text, "mount /mnt/data: alice@example.org:/srv, pid 4242, mounted ")) << text;
  EXPECT_TRUE(has(text, "(3h 25m ago)")) << text;
  EXPECT_TRUE(has(text, "connection 0: connected since ")) << text;
  EXPECT_TRUE(has(text, "(1m 35s), reconnects 2, rtt 1.25 ms, in flight 17, waiting for reconnect 0\n")) << text;
  EXPECT_TRUE(has(text, "  sent 2.0 KiB (2048 bytes), received 3.0 MiB (3145728 bytes); read data received in place: 2.0 MiB (2097152 bytes)\n")) << text;
  EXPECT_TRUE(has(text, "  last dropped: the server closed the connection\n")) << text;
  EXPECT_TRUE(has(text, "connection 1: reconnecting since ")) << text;
  EXPECT_TRUE(has(text, "(4s), attempt 3, reconnects 0, rtt not measured yet, in flight 0, waiting for reconnect 5"))
      << text;
  EXPECT_TRUE(has(text, "cache attributes: 90.0% hits (90 of 100 lookups), 120 entries\n")) << text;
  EXPECT_TRUE(has(text, "cache listings: no lookups yet, 0 entries\n")) << text;
  EXPECT_TRUE(has(text, "memory: 40.0 MiB resident; prefetched 12.0 MiB of 96.0 MiB; written, not yet confirmed "
                        "0 bytes of 64.0 MiB; 321 inodes\n"))
      << text;
}

TEST(StatusReport, SocketNameFitsEvenForLongPaths) {
  EXPECT_EQ(status_socket_name("/mnt/data"), "sftpfs-status:/mnt/data");
  std::string long_path = "/" + std::string(200, 'x');
  std::string name = status_socket_name(long_path);
  EXPECT_LT(name.size(), 107u);
  EXPECT_EQ(name, status_socket_name(long_path));  // the same on both sides
  EXPECT_NE(name, status_socket_name(long_path + "y"));
}

TEST(StatusServer, AnswersItsUserAndIsGoneWhenStopped) {
  std::string mountpoint = "/nonexistent/sftpfs-status-test-" + std::to_string(getpid());
  std::ostringstream out, err;
  {
    auto server = StatusServer::start(mountpoint, [] { return std::string("hello from the daemon\n"); });
    ASSERT_TRUE(server) << server.error().message;
    auto second = StatusServer::start(mountpoint, [] { return std::string(); });
    EXPECT_FALSE(second);  // the name is taken: a second mount there does not steal it
    EXPECT_EQ(print_status(mountpoint, out, err), 0) << err.str();
    EXPECT_EQ(out.str(), "hello from the daemon\n");
  }
  out.str("");
  EXPECT_EQ(print_status(mountpoint, out, err), 1);
  EXPECT_EQ(err.str(), "sftpfs: no sftpfs mount at " + mountpoint + "\n");
  EXPECT_EQ(out.str(), "");
}

}  // namespace
}  // namespace sftpfs::cli
