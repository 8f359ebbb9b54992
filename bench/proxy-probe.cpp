// proxy-probe: measures what delay-proxy adds (round-trip time) and what it lets through (throughput).
//
//   proxy-probe serve PORTFILE          echo/sink/source server on a free 127.0.0.1 port (until SIGTERM)
//   proxy-probe rtt PORT COUNT          ping-pong of 1-byte messages; prints "rtt_ms median min max"
//   proxy-probe upload PORT BYTES       sends BYTES, half-closes, checks the server's byte count and
//                                       content; prints "upload_MBps X"
//   proxy-probe download PORT BYTES     receives BYTES from the server and checks them; prints "download_MBps X"
//
// The first byte of a connection picks the server's mode: 'E' echo, 'S' sink (replies with the 8-byte
// count of verified bytes after the client's EOF, which also checks half-close), 'G' generate (reads an
// 8-byte count, sends that many pattern bytes, closes). Exit status 1 on any mismatch or error.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPeriod = 251;  // pattern byte at stream offset i is i % 251
constexpr size_t kBlock = 1 << 20;

// A buffer holding the pattern from phase 0, long enough to serve any block at any phase.
const std::vector<unsigned char>& pattern() {
  static const std::vector<unsigned char> buffer = [] {
    std::vector<unsigned char> b(kBlock + kPeriod);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(i % kPeriod);
    return b;
  }();
  return buffer;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "proxy-probe: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

bool write_all(int fd, const void* data, size_t size) {
  auto bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, size_t size) {
  auto bytes = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = ::read(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) die("connect");
  nodelay(fd);
  return fd;
}

// Reads until EOF, checking the pattern; returns the count, or -1 on a content mismatch.
int64_t receive_checked(int fd) {
  std::vector<unsigned char> buffer(kBlock);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return static_cast<int64_t>(total);
    if (std::memcmp(buffer.data(), pattern().data() + total % kPeriod, static_cast<size_t>(n)) != 0) return -1;
    total += static_cast<uint64_t>(n);
  }
}

bool send_pattern(int fd, uint64_t bytes) {
  uint64_t sent = 0;
  while (sent < bytes) {
    size_t size = static_cast<size_t>(std::min<uint64_t>(kBlock, bytes - sent));
    if (!write_all(fd, pattern().data() + sent % kPeriod, size)) return false;
    sent += size;
  }
  return true;
}

void serve_one(int fd) {
  char mode = 0;
  if (read_all(fd, &mode, 1)) {
    if (mode == 'E') {
      char buffer[65536];
      for (;;) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || !write_all(fd, buffer, static_cast<size_t>(n))) break;
      }
    } else if (mode == 'S') {
      int64_t count = receive_checked(fd);
      write_all(fd, &count, sizeof count);
    } else if (mode == 'G') {
      uint64_t bytes = 0;
      if (read_all(fd, &bytes, sizeof bytes)) send_pattern(fd, bytes);
    }
  }
  ::close(fd);
}

int serve(const char* port_file) {
  ::signal(SIGPIPE, SIG_IGN);
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) die("bind");
  if (::listen(listener, 512) < 0) die("listen");
  socklen_t length = sizeof address;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  std::string temporary = std::string(port_file) + ".tmp";
  std::ofstream(temporary) << ntohs(address.sin_port) << '\n';
  std::rename(temporary.c_str(), port_file);
  for (;;) {
    int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    nodelay(fd);
    std::thread(serve_one, fd).detach();
  }
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int rtt(int port, int count) {
  int fd = connect_to(port);
  char mode = 'E';
  if (!write_all(fd, &mode, 1)) die("write");
  std::vector<double> samples;
  for (int i = 0; i < count; ++i) {
    char byte = static_cast<char>(i);
    char echoed = 0;
    auto start = Clock::now();
    if (!write_all(fd, &byte, 1) || !read_all(fd, &echoed, 1)) die("echo");
    samples.push_back(seconds_since(start) * 1000);
    if (echoed != byte) {
      std::fprintf(stderr, "proxy-probe: echo mismatch\n");
      return 1;
    }
  }
  ::close(fd);
  std::sort(samples.begin(), samples.end());
  std::printf("rtt_ms %.3f %.3f %.3f\n", samples[samples.size() / 2], samples.front(), samples.back());
  return 0;
}

int upload(int port, uint64_t bytes) {
  int fd = connect_to(port);
  auto start = Clock::now();
  char mode = 'S';
  if (!write_all(fd, &mode, 1) || !send_pattern(fd, bytes)) die("send");
  ::shutdown(fd, SHUT_WR);
  int64_t count = -2;
  if (!read_all(fd, &count, sizeof count)) die("read count");
  double elapsed = seconds_since(start);
  ::close(fd);
  if (count != static_cast<int64_t>(bytes)) {
    std::fprintf(stderr, "proxy-probe: server verified %lld bytes of %llu\n", static_cast<long long>(count),
                 static_cast<unsigned long long>(bytes));
    return 1;
  }
  std::printf("upload_MBps %.0f\n", static_cast<double>(bytes) / elapsed / 1e6);
  return 0;
}

int download(int port, uint64_t bytes) {
  int fd = connect_to(port);
  auto start = Clock::now();
  char mode = 'G';
  if (!write_all(fd, &mode, 1) || !write_all(fd, &bytes, sizeof bytes)) die("send");
  int64_t count = receive_checked(fd);
  double elapsed = seconds_since(start);
  ::close(fd);
  if (count != static_cast<int64_t>(bytes)) {
    std::fprintf(stderr, "proxy-probe: received %lld good bytes of %llu\n", static_cast<long long>(count),
                 static_cast<unsigned long long>(bytes));
    return 1;
  }
  std::printf("download_MBps %.0f\n", static_cast<double>(bytes) / elapsed / 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view command = argc > 1 ? argv[1] : "";
  if (command == "serve" && argc == 3) return serve(argv[2]);
  if (command == "rtt" && argc == 4) return rtt(std::atoi(argv[2]), std::atoi(argv[3]));
  if (command == "upload" && argc == 4) return upload(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
  if (command == "download" && argc == 4) return download(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
  std::fprintf(stderr, "usage: proxy-probe serve PORTFILE | rtt PORT COUNT | upload PORT BYTES | download PORT BYTES\n");
  return 2;
}
