// delay-proxy: a userspace TCP proxy that adds a fixed one-way delay in each direction.
//
//   delay-proxy --target PORT --delay-ms D [--listen PORT] [--port-file FILE] [--max-queue-mib N]
//
// Listens on 127.0.0.1:LISTEN (0 = any free port, written to --port-file and stdout) and forwards every
// connection to 127.0.0.1:TARGET. Each chunk read from one side is stamped with (now + D) and written to
// the other side no earlier than that, so the round trip grows by 2*D while bandwidth stays uncapped:
// the proxy keeps reading while earlier chunks wait (up to --max-queue-mib per direction, default 256).
// EOF is delayed like data (half-close is forwarded with shutdown(SHUT_WR)). SIGTERM/SIGINT end it cleanly.
// This kernel has no netem; this is the substitute the benchmarks use.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadSize = 256 * 1024;
constexpr size_t kSmallChunk = 16 * 1024;  // reads below this are copied to a right-sized buffer
constexpr int kReadsPerEvent = 16;         // bounded so one busy socket cannot starve the others

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Chunk {
  Clock::time_point due;
  std::vector<char> data;  // empty = end of stream
  size_t offset = 0;
};

struct Direction {
  int from = -1;
  int to = -1;
  std::deque<Chunk> queue;
  size_t queued_bytes = 0;
  bool read_closed = false;  // EOF seen on `from`
  bool write_shut = false;   // shutdown(SHUT_WR) done on `to`
  bool blocked = false;      // `to` said EAGAIN; wait for EPOLLOUT
};

struct Connection {
  uint64_t id = 0;
  Fd client;
  Fd server;
  bool connecting = true;
  Direction up;    // client -> server
  Direction down;  // server -> client
  uint32_t client_mask = 0;
  uint32_t server_mask = 0;
};

struct Options {
  int listen_port = 0;
  int target_port = -1;
  double delay_ms = 0;
  size_t max_queue = 256u << 20;
  std::string port_file;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "delay-proxy: %s\nusage: delay-proxy --target PORT --delay-ms D [--listen PORT] "
               "[--port-file FILE] [--max-queue-mib N]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (arg == "--listen") options.listen_port = std::atoi(value());
    else if (arg == "--target") options.target_port = std::atoi(value());
    else if (arg == "--delay-ms") options.delay_ms = std::atof(value());
    else if (arg == "--port-file") options.port_file = value();
    else if (arg == "--max-queue-mib") options.max_queue = static_cast<size_t>(std::atol(value())) << 20;
    else usage("unknown argument");
  }
  if (options.target_port <= 0 || options.target_port > 65535) usage("--target PORT is required");
  if (options.listen_port < 0 || options.listen_port > 65535) usage("bad --listen");
  if (options.delay_ms < 0) usage("negative delay");
  if (options.max_queue < kReadSize) options.max_queue = kReadSize;
  return options;
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

sockaddr_in loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

class Proxy {
 public:
  explicit Proxy(Options options)
      : options_(std::move(options)),
        delay_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(options_.delay_ms))) {}

  int run() {
    ::prctl(PR_SET_TIMERSLACK, 1UL);  // the default 50 us slack would add to every delayed chunk
    epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    if (epoll_.get() < 0) return fail("epoll_create1");
    if (!open_listener()) return 1;
    if (!open_signals()) return 1;
    std::vector<epoll_event> events(256);
    while (!stopping_) {
      timespec timeout{};
      const timespec* timeout_ptr = nullptr;
      if (auto next = next_due()) {
        auto wait = *next - Clock::now();
        if (wait < Clock::duration::zero()) wait = Clock::duration::zero();
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
        timeout.tv_sec = ns / 1'000'000'000;
        timeout.tv_nsec = ns % 1'000'000'000;
        timeout_ptr = &timeout;
      }
      int count = ::epoll_pwait2(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout_ptr, nullptr);
      if (count < 0) {
        if (errno == EINTR) continue;
        return fail("epoll_pwait2");
      }
      for (int i = 0; i < count; ++i) dispatch(events[i]);
      pump_all();
      reap();
    }
    connections_.clear();
    return 0;
  }

 private:
  static constexpr uint64_t kListenerTag = ~uint64_t{0};
  static constexpr uint64_t kSignalTag = ~uint64_t{0} - 1;

  int fail(const char* what) {
    std::fprintf(stderr, "delay-proxy: %s: %s\n", what, std::strerror(errno));
    return 1;
  }

  bool open_listener() {
    listener_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (listener_.get() < 0) return fail("socket") == 0;
    int one = 1;
    ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    auto address = loopback(options_.listen_port);
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) return fail("bind") == 0;
    if (::listen(listener_.get(), 512) < 0) return fail("listen") == 0;
    socklen_t length = sizeof address;
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length);
    int port = ntohs(address.sin_port);
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kListenerTag;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &event);
    if (!options_.port_file.empty()) {
      // Written to a temporary name and renamed, so a waiting script never reads half a number.
      std::string temporary = options_.port_file + ".tmp";
      std::ofstream(temporary) << port << '\n';
      std::rename(temporary.c_str(), options_.port_file.c_str());
    }
    std::printf("%d\n", port);
    std::fflush(stdout);
    return true;
  }

  bool open_signals() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    signal_ = Fd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (signal_.get() < 0) return fail("signalfd") == 0;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kSignalTag;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, signal_.get(), &event);
    ::signal(SIGPIPE, SIG_IGN);
    return true;
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          std::fprintf(stderr, "delay-proxy: accept: %s\n", std::strerror(errno));
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      auto connection = std::make_unique<Connection>();
      connection->id = next_id_++;
      connection->client = Fd(fd);
      connection->server = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (connection->server.get() < 0) continue;
      set_nodelay(connection->client.get());
      set_nodelay(connection->server.get());
      auto target = loopback(options_.target_port);
      int rc = ::connect(connection->server.get(), reinterpret_cast<sockaddr*>(&target), sizeof target);
      if (rc < 0 && errno != EINPROGRESS) continue;  // target down: drop the client (closes it)
      connection->up.from = connection->client.get();
      connection->up.to = connection->server.get();
      connection->down.from = connection->server.get();
      connection->down.to = connection->client.get();
      epoll_event event{};
      event.data.u64 = connection->id * 2;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, connection->client.get(), &event);
      event.data.u64 = connection->id * 2 + 1;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, connection->server.get(), &event);
      Connection& ref = *connection;
      connections_.emplace(ref.id, std::move(connection));
      update_masks(ref);
    }
  }

  void dispatch(const epoll_event& event) {
    if (event.data.u64 == kListenerTag) return accept_all();
    if (event.data.u64 == kSignalTag) {
      signalfd_siginfo info;
      while (::read(signal_.get(), &info, sizeof info) == sizeof info) stopping_ = true;
      return;
    }
    auto found = connections_.find(event.data.u64 / 2);
    if (found == connections_.end()) return;
    Connection& connection = *found->second;
    if (connection.client.get() < 0) return;  // already aborted in this round
    bool is_server = event.data.u64 % 2 == 1;
    int fd = is_server ? connection.server.get() : connection.client.get();
    if (is_server && connection.connecting && (event.events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
      int error = 0;
      socklen_t length = sizeof error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) return abort(connection);
      connection.connecting = false;
    }
    if (event.events & EPOLLERR) return abort(connection);
    Direction& incoming = is_server ? connection.down : connection.up;  // reads from fd
    Direction& outgoing = is_server ? connection.up : connection.down;  // writes to fd
    if (event.events & EPOLLOUT) outgoing.blocked = false;
    if (event.events & (EPOLLIN | EPOLLHUP)) {
      if (!read_some(connection, incoming)) return abort(connection);
    }
    if (!pump(connection, outgoing) || !pump(connection, incoming)) return abort(connection);
    if ((event.events & EPOLLHUP) && !outgoing.write_shut && !connection.connecting) return abort(connection);
    update_masks(connection);
  }

  // Returns false when the connection must be torn down.
  bool read_some(Connection& connection, Direction& direction) {
    for (int round = 0; round < kReadsPerEvent; ++round) {
      if (direction.read_closed || direction.queued_bytes >= options_.max_queue) return true;
      std::vector<char> buffer(kReadSize);
      ssize_t n = ::read(direction.from, buffer.data(), buffer.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN;
      }
      auto due = Clock::now() + delay_;
      if (n == 0) {
        direction.read_closed = true;
        direction.queue.push_back(Chunk{due, {}, 0});
        return pump(connection, direction);
      }
      if (static_cast<size_t>(n) < kSmallChunk) {
        buffer = std::vector<char>(buffer.begin(), buffer.begin() + n);
      } else {
        buffer.resize(static_cast<size_t>(n));
      }
      direction.queued_bytes += static_cast<size_t>(n);
      direction.queue.push_back(Chunk{due, std::move(buffer), 0});
      if (!pump(connection, direction)) return false;
      if (static_cast<size_t>(n) < kReadSize) return true;  // drained for now
    }
    return true;
  }

  // Writes every due chunk it can. Returns false when the connection must be torn down.
  bool pump(Connection& connection, Direction& direction) {
    if (direction.blocked) return true;
    if (&direction == &connection.up && connection.connecting) return true;
    auto now = Clock::now();
    while (!direction.queue.empty() && direction.queue.front().due <= now) {
      Chunk& chunk = direction.queue.front();
      if (chunk.data.empty()) {
        ::shutdown(direction.to, SHUT_WR);
        direction.write_shut = true;
        direction.queue.pop_front();
        continue;
      }
      ssize_t n = ::write(direction.to, chunk.data.data() + chunk.offset, chunk.data.size() - chunk.offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          direction.blocked = true;
          return true;
        }
        return false;
      }
      chunk.offset += static_cast<size_t>(n);
      if (chunk.offset == chunk.data.size()) {
        direction.queued_bytes -= chunk.data.size();
        direction.queue.pop_front();
      }
    }
    return true;
  }

  void update_masks(Connection& connection) {
    auto want = [&](const Direction& reading, const Direction& writing, bool connecting) {
      uint32_t mask = 0;
      if (!reading.read_closed && reading.queued_bytes < options_.max_queue) mask |= EPOLLIN;
      if (writing.blocked || connecting) mask |= EPOLLOUT;
      return mask;
    };
    uint32_t client_mask = want(connection.up, connection.down, false);
    uint32_t server_mask = want(connection.down, connection.up, connection.connecting);
    if (client_mask != connection.client_mask) {
      epoll_event event{client_mask, {.u64 = connection.id * 2}};
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, connection.client.get(), &event);
      connection.client_mask = client_mask;
    }
    if (server_mask != connection.server_mask) {
      epoll_event event{server_mask, {.u64 = connection.id * 2 + 1}};
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, connection.server.get(), &event);
      connection.server_mask = server_mask;
    }
  }

  void abort(Connection& connection) {
    // A reset on one side becomes a close on the other; queued bytes are dropped, as a cut line would.
    connection.client.reset();
    connection.server.reset();
  }

  static bool finished(const Connection& connection) {
    auto done = [](const Direction& d) { return d.read_closed && d.queue.empty() && d.write_shut; };
    return connection.client.get() < 0 || (done(connection.up) && done(connection.down));
  }

  void pump_all() {
    for (auto& [id, connection] : connections_) {
      if (connection->client.get() < 0) continue;
      if (!pump(*connection, connection->up) || !pump(*connection, connection->down)) {
        abort(*connection);
        continue;
      }
      update_masks(*connection);
    }
  }

  void reap() {
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (finished(*it->second)) it = connections_.erase(it);  // Fd destructors close both sockets
      else ++it;
    }
  }

  std::optional<Clock::time_point> next_due() const {
    std::optional<Clock::time_point> next;
    auto consider = [&](const Connection& connection, const Direction& direction) {
      if (direction.queue.empty() || direction.blocked) return;
      if (&direction == &connection.up && connection.connecting) return;
      auto due = direction.queue.front().due;
      if (!next || due < *next) next = due;
    };
    for (const auto& [id, connection] : connections_) {
      consider(*connection, connection->up);
      consider(*connection, connection->down);
    }
    return next;
  }

  Options options_;
  Clock::duration delay_;
  Fd epoll_;
  Fd listener_;
  Fd signal_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
};

}  // namespace

int main(int argc, char** argv) {
  Proxy proxy(parse(argc, argv));
  return proxy.run();
}
