// The I/O thread of one SFTP connection. Rules from libssh2 1.10 (see shared notes) shape the loop:
// - only this thread touches the session and channel once the thread runs;
// - channel_write sends at most one SSH packet per call and, after EAGAIN, must be called again with the
//   same bytes: the outbound batch is never modified while it is being sent;
// - while an outbound packet is half sent (EAGAIN with OUTBOUND blocked), nothing else that sends may be
//   called: no channel_read (it may send a window adjust), no keepalive, no other channel's write, no
//   channel open. That state is per session, so it spans every channel.
#include "client/connection.hpp"

#include <libssh2.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "util/log.hpp"

namespace sftpfs::client {

namespace {

constexpr size_t kLengthPrefix = 4;
// A DATA reply up to its data: length, type, id, data length.
constexpr size_t kDataHeaderBytes = kLengthPrefix + 1 + 4 + 4;
// Requests are gathered into one outbound batch up to this size: fewer, fuller SSH packets for small
// requests (a STAT is ~30 bytes), while a batch of large WRITEs stays bounded.
constexpr size_t kMaxBatchBytes = 512 * 1024;
// libssh2 sends no keepalive unless an interval is configured, and treats 1 s as 2 s.
constexpr std::chrono::seconds kMinKeepalive{2};
// A request at least this large (a WRITE) is sent from its own buffer as a batch of its own.
constexpr size_t kSendInPlaceBytes = 64 * 1024;
// Requests this small measure the round trip (a large WRITE also measures the bandwidth).
constexpr size_t kRttProbeSize = 512;

uint32_t load_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
void store_u32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

std::string libssh2_error(LIBSSH2_SESSION* session, int rc) {
  char* message = nullptr;
  int length = 0;
  libssh2_session_last_error(session, &message, &length, 0);
  return std::string(message ? message : "unknown error") + " (libssh2 " + std::to_string(rc) + ")";
}

// Blocking exchange used before the I/O thread starts: write one packet, read one packet back.
Status write_all_blocking(LIBSSH2_CHANNEL* channel, LIBSSH2_SESSION* session, const sftp::Bytes& packet) {
  size_t sent = 0;
  while (sent < packet.size()) {
    ssize_t rc = libssh2_channel_write(channel, reinterpret_cast<const char*>(packet.data() + sent),
                                       packet.size() - sent);
    if (rc < 0) return Error::transport_error("sending to the SFTP server failed: " + libssh2_error(session, int(rc)));
    sent += static_cast<size_t>(rc);
  }
  return {};
}

Result<sftp::Bytes> read_packet_blocking(LIBSSH2_CHANNEL* channel, LIBSSH2_SESSION* session) {
  auto read_exact = [&](uint8_t* into, size_t length) -> Status {
    size_t got = 0;
    while (got < length) {
      ssize_t rc = libssh2_channel_read(channel, reinterpret_cast<char*>(into + got), length - got);
      if (rc < 0) return Error::transport_error("reading from the SFTP server failed: " + libssh2_error(session, int(rc)));
      if (rc == 0) {
        if (libssh2_channel_eof(channel))
          return Error::transport_error(
              "the server closed the SFTP channel (is the sftp subsystem enabled on the server?)");
        continue;
      }
      got += static_cast<size_t>(rc);
    }
    return {};
  };
  uint8_t prefix[4];
  if (auto st = read_exact(prefix, 4); !st) return st.take_error();
  uint32_t length = load_u32(prefix);
  if (length == 0 || length > sftp::kMaxIncomingPacket)
    return Error::protocol_error("the SFTP server sent a packet of invalid length " + std::to_string(length) +
                                 " (is something printing text in the remote shell's startup files?)");
  sftp::Bytes packet(length);
  if (auto st = read_exact(packet.data(), length); !st) return st.take_error();
  return packet;
}

}  // namespace

struct Connection::Impl {
  struct Queued {
    sftp::Bytes packet;
    ReplyCallback on_reply;
    Clock::time_point deadline;  // {} = from the moment it is written
    size_t channel = 0;
    Payload payload;  // sent right behind `packet`
    Sink sink;
  };
  struct InFlight {
    ReplyCallback on_reply;
    Clock::time_point deadline;
    Clock::time_point sent;
    size_t channel = 0;
    bool measures_rtt = false;
    Sink sink;  // where its DATA may be received in place
  };
  // A DATA reply whose bytes are being received straight into its request's sink.
  struct InPlace {
    uint32_t id = 0;
    Sink sink;
    size_t expected = 0;
    size_t filled = 0;
  };
  // One SFTP channel of the session: its own sftp-server, handles, window, batch and receive buffer.
  struct SftpChannel {
    // unopened -> opening -> ignoring_stderr -> starting -> greeting (INIT sent, VERSION awaited) -> ready;
    // refused when the server will not open it (MaxSessions) or start sftp on it.
    enum class Phase { unopened, opening, ignoring_stderr, starting, greeting, ready, refused };
    Phase phase = Phase::unopened;
    ssh::ChannelPtr channel;
    std::deque<Queued> waiting;  // taken from `submitted`, not yet written (in-flight cap, or not open yet)
    sftp::Bytes out;             // the batch being sent; untouched until fully sent
    size_t out_pos = 0;
    Payload tail;                // sent after `out`: the last request's payload (a WRITE's data)
    size_t tail_pos = 0;
    sftp::Bytes in;              // received bytes not yet parsed; starts with the first incomplete packet
    size_t in_len = 0;
    std::optional<InPlace> in_place;  // a DATA reply being received into its sink instead of `in`
    size_t sinks_in_flight = 0;       // its requests in flight with a sink
    std::string refusal;         // why it is refused

    bool drained() const { return out_pos == out.size() && tail_pos == tail.length; }
    bool readable() const { return phase == Phase::greeting || phase == Phase::ready; }
  };
  using Phase = SftpChannel::Phase;

  Connection* owner = nullptr;
  ConnectionOptions options;
  Liveness liveness{};
  std::unique_ptr<ssh::Session> session;
  int wake_fd = -1;
  std::thread thread;
  std::mutex join_mutex;  // wait_stopped() and the destructor both join

  // Shared with submitters; guarded by mutex.
  std::mutex mutex;
  std::deque<Queued> submitted;
  bool stopping = false;
  std::string failure_reason;

  // I/O thread only (and the destructor, after the thread ended).
  std::vector<SftpChannel> channels;
  std::optional<size_t> opening;  // the channel being opened: libssh2 opens one at a time per session
  size_t send_start = 0;          // channels take turns at sending first
  std::unordered_map<uint32_t, InFlight> in_flight;
  std::unordered_set<uint32_t> expired_ids;  // timed out; a late reply to them is dropped
  uint32_t next_id = 1;
  Clock::time_point last_receive = Clock::now();
  Clock::time_point last_probe = Clock::now();
  // Since when we wait for the server to say anything (first request, probe or channel open sent
  // after it last spoke); {} while nothing is owed.
  Clock::time_point owed_since{};
  bool closed_by_owner = false;  // fail() or the destructor, not the network

  ~Impl() {
    if (wake_fd >= 0) ::close(wake_fd);
  }

  void wake() {
    uint64_t one = 1;
    ssize_t ignored = ::write(wake_fd, &one, sizeof one);
    (void)ignored;
  }

  LIBSSH2_SESSION* raw() const { return session->raw(); }
  bool outbound_blocked() const { return libssh2_session_block_directions(raw()) & LIBSSH2_SESSION_BLOCK_OUTBOUND; }

  uint32_t allocate_id() {
    // Ids wrap after 4 billion requests; skip any still in use.
    do {
      ++next_id;
      if (next_id == 0) next_id = 1;
    } while (in_flight.count(next_id) || expired_ids.count(next_id));
    return next_id;
  }

  // Completes every request with `error`. Called on the I/O thread, or by the destructor after it ended.
  void fail_all(const Error& error) {
    std::deque<Queued> queued;
    {
      std::lock_guard<std::mutex> lock(mutex);
      queued.swap(submitted);
    }
    std::vector<ReplyCallback> callbacks;
    for (auto& [id, request] : in_flight) callbacks.push_back(std::move(request.on_reply));
    in_flight.clear();
    for (auto& c : channels) {
      for (auto& q : c.waiting) callbacks.push_back(std::move(q.on_reply));
      c.waiting.clear();
      c.sinks_in_flight = 0;
    }
    for (auto& q : queued) callbacks.push_back(std::move(q.on_reply));
    owner->outstanding_.fetch_sub(callbacks.size());
    for (auto& cb : callbacks) cb(error);
  }

  void mark_failed(const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (failure_reason.empty()) failure_reason = reason;
    }
    if (!owner->failed_.exchange(true)) LOG_INFO("connection to %s failed: %s", session->options().host.c_str(), reason.c_str());
  }

  // Moves submitted requests to their channels; a refused channel's requests complete at once.
  void distribute() {
    std::deque<Queued> taken;
    {
      std::lock_guard<std::mutex> lock(mutex);
      taken.swap(submitted);
    }
    std::vector<std::pair<ReplyCallback, std::string>> refused;
    for (auto& q : taken) {
      SftpChannel& c = channels[q.channel];
      if (c.phase == Phase::refused) {
        refused.emplace_back(std::move(q.on_reply), c.refusal);
        continue;
      }
      c.waiting.push_back(std::move(q));
    }
    owner->outstanding_.fetch_sub(refused.size());
    for (auto& [cb, why] : refused) cb(Error::not_supported(why));
  }

  // Moves a channel's waiting requests into its outbound batch while the in-flight cap allows.
  void fill_batch(size_t index) {
    SftpChannel& c = channels[index];
    c.out.clear();
    c.out_pos = 0;
    c.tail = {};
    c.tail_pos = 0;
    const auto now = Clock::now();
    while (!c.waiting.empty() && in_flight.size() < options.max_in_flight && c.out.size() < kMaxBatchBytes) {
      Queued& q = c.waiting.front();
      // A payload (a WRITE's data) is sent from where it is, behind the batch, which it ends. A large
      // packet is sent from its own buffer as a batch of its own.
      if (q.payload.length > 0) {
        c.tail = std::move(q.payload);
      } else if (q.packet.size() >= kSendInPlaceBytes && !c.out.empty()) {
        break;
      }
      const bool alone = c.out.empty() && q.packet.size() >= kSendInPlaceBytes;
      const bool last = alone || c.tail.length > 0;
      uint32_t id = allocate_id();
      store_u32(q.packet.data() + sftp::kIdOffset, id);
      const size_t size = q.packet.size();
      if (alone) {
        c.out = std::move(q.packet);
      } else {
        c.out.insert(c.out.end(), q.packet.begin(), q.packet.end());
      }
      auto deadline = q.deadline == Clock::time_point{} ? now + options.request_timeout : q.deadline;
      if (q.sink.data) ++c.sinks_in_flight;
      in_flight.emplace(id, InFlight{std::move(q.on_reply), deadline, now, index, size + c.tail.length <= kRttProbeSize,
                                     std::move(q.sink)});
      if (owed_since == Clock::time_point{}) owed_since = now;
      c.waiting.pop_front();
      if (last) break;
    }
  }

  // A half-sent outbound SSH packet belongs to the call that started it (channel_write of one channel
  // for requests, channel_read of one channel for a window adjust, the opening of a channel); only
  // that call may continue it. libssh2 keeps one such packet per session, whatever the channel.
  struct Pending {
    enum class Kind { none, writer, reader, opener } kind = Kind::none;
    size_t channel = 0;
  };
  Pending pending;
  bool half_sent() const { return pending.kind != Pending::Kind::none; }
  void clear_pending() { pending = {}; }
  // After EAGAIN: the call owns a half-sent packet only when libssh2 is blocked sending.
  void note_eagain(Pending::Kind kind, size_t channel) {
    pending = outbound_blocked() ? Pending{kind, channel} : Pending{};
  }

  // Sends what it can of one channel's batch, refilling it when drained; stops at a full window.
  Status send_channel(size_t index) {
    SftpChannel& c = channels[index];
    for (;;) {
      if (c.drained()) {
        if (c.phase != Phase::ready) return {};
        fill_batch(index);
        if (c.drained()) return {};
      }
      // A full window: channel_write would only read the socket (a syscall) and return EAGAIN. Not
      // while this call owns a half-sent packet: that must be continued whatever the window says.
      if (channels.size() > 1 && !half_sent() && libssh2_channel_window_write(c.channel.get()) == 0) return {};
      const bool from_out = c.out_pos < c.out.size();
      const uint8_t* bytes = from_out ? c.out.data() + c.out_pos : c.tail.data() + c.tail_pos;
      const size_t left = from_out ? c.out.size() - c.out_pos : c.tail.length - c.tail_pos;
      ssize_t rc = libssh2_channel_write(c.channel.get(), reinterpret_cast<const char*>(bytes), left);
      if (rc == LIBSSH2_ERROR_EAGAIN) {
        note_eagain(Pending::Kind::writer, index);
        return {};  // when not blocked sending, the server's window is full: wait for it to read
      }
      clear_pending();
      if (rc < 0) return Error::transport_error("sending failed: " + libssh2_error(raw(), int(rc)));
      (from_out ? c.out_pos : c.tail_pos) += static_cast<size_t>(rc);
      owner->bytes_sent_.fetch_add(static_cast<uint64_t>(rc), std::memory_order_relaxed);
    }
  }

  // Every channel in turn, the first one rotating: a channel whose window is full lets the next send.
  Status send_all() {
    const size_t count = channels.size();
    const size_t first = send_start++ % count;
    for (size_t i = 0; i < count && !half_sent(); ++i)
      if (auto st = send_channel((first + i) % count); !st) return st;
    return {};
  }

  // Reads what one channel has and dispatches every complete packet. `got`: some bytes came.
  Status receive_channel(size_t index, bool& got) {
    SftpChannel& c = channels[index];
    for (;;) {
      uint8_t* into;
      size_t room;
      if (c.in_place) {
        into = c.in_place->sink.data + c.in_place->filled;
        room = c.in_place->expected - c.in_place->filled;
      } else {
        if (c.in.size() - c.in_len < 64 * 1024) c.in.resize(std::max<size_t>(c.in.size() * 2, 1u << 20));
        into = c.in.data() + c.in_len;
        room = c.in.size() - c.in_len;
        // While replies may be received in place, a read into `in` stops at the next packet's header,
        // so a DATA reply's bytes are not pulled into `in` (and copied) before its sink is known.
        if (c.sinks_in_flight > 0) room = std::min(room, read_to_next_header(c));
      }
      ssize_t rc = libssh2_channel_read(c.channel.get(), reinterpret_cast<char*>(into), room);
      if (rc == LIBSSH2_ERROR_EAGAIN) {
        note_eagain(Pending::Kind::reader, index);
        return {};
      }
      clear_pending();
      if (rc < 0) return Error::transport_error("receiving failed: " + libssh2_error(raw(), int(rc)));
      if (rc == 0) {
        if (libssh2_channel_eof(c.channel.get())) return Error::transport_error("the server closed the SFTP channel");
        return {};
      }
      got = true;
      owner->bytes_received_.fetch_add(static_cast<uint64_t>(rc), std::memory_order_relaxed);
      if (c.in_place) {
        owner->bytes_in_place_.fetch_add(static_cast<uint64_t>(rc), std::memory_order_relaxed);
        c.in_place->filled += static_cast<size_t>(rc);
        if (c.in_place->filled == c.in_place->expected) finish_in_place(index);
      } else {
        c.in_len += static_cast<size_t>(rc);
        if (auto st = dispatch_complete_packets(index); !st) return st;
        start_in_place(index);
      }
      heard(Clock::now());
    }
  }

  // Bytes that complete the packet at the front of `in` and bring in the next one's DATA header.
  static size_t read_to_next_header(const SftpChannel& c) {
    if (c.in_len < kDataHeaderBytes) return kDataHeaderBytes - c.in_len;
    const size_t packet_end = kLengthPrefix + load_u32(c.in.data());  // incomplete: > in_len
    return packet_end - c.in_len + kDataHeaderBytes;
  }

  // The packet at the front of `in` is a DATA reply to a request with a sink: its bytes so far go
  // there, and the rest is read straight into it. Anything unusual (another layout, more data than
  // the sink holds, an unknown id) stays on the ordinary path, whose parser judges it.
  void start_in_place(size_t index) {
    SftpChannel& c = channels[index];
    if (c.sinks_in_flight == 0 || c.phase != Phase::ready || c.in_len < kDataHeaderBytes) return;
    const uint8_t* p = c.in.data();
    const uint32_t length = load_u32(p);
    const uint32_t id = load_u32(p + kLengthPrefix + 1);
    const uint32_t data_length = load_u32(p + kLengthPrefix + 5);
    if (p[kLengthPrefix] != sftp::SSH_FXP_DATA || uint64_t(length) != uint64_t(data_length) + 9) return;
    auto it = in_flight.find(id);
    if (it == in_flight.end() || it->second.channel != index || !it->second.sink.data ||
        data_length > it->second.sink.size)
      return;
    const size_t have = c.in_len - kDataHeaderBytes;  // less than data_length: the packet is incomplete
    std::memcpy(it->second.sink.data, p + kDataHeaderBytes, have);
    c.in_place = InPlace{id, it->second.sink, data_length, have};
    c.in_len = 0;
  }

  void finish_in_place(size_t index) {
    InPlace done = std::move(*channels[index].in_place);
    channels[index].in_place.reset();
    auto it = in_flight.find(done.id);
    if (it == in_flight.end()) {
      expired_ids.erase(done.id);  // it timed out while its bytes came: dropped like any late reply
      return;
    }
    complete(it, sftp::Reply{done.id, sftp::DataReply{sftp::ByteView(done.sink.data, done.expected)}});
  }

  // Every channel_read first reads the socket until EAGAIN (a syscall at least), which pulls every
  // channel's data into libssh2's queue, where no poll sees it. So the first readable channel is read
  // (the socket), then the others only when data, an end or a close waits for them in that queue;
  // passes repeat until one gets nothing.
  Status receive_all() {
    for (bool again = true; again && !half_sent();) {
      again = false;
      bool socket_read = false;
      for (size_t index = 0; index < channels.size() && !half_sent(); ++index) {
        SftpChannel& c = channels[index];
        if (!c.readable()) continue;
        if (socket_read && !libssh2_poll_channel_read(c.channel.get(), 0) && !libssh2_channel_eof(c.channel.get()))
          continue;
        socket_read = true;
        bool got = false;
        if (auto st = receive_channel(index, got); !st) return st;
        again |= got;
      }
      if (channels.size() == 1) break;  // its own read loop drained it
    }
    return {};
  }

  Status dispatch_complete_packets(size_t index) {
    SftpChannel& c = channels[index];
    size_t pos = 0;
    while (c.in_len - pos >= kLengthPrefix) {
      uint32_t length = load_u32(c.in.data() + pos);
      if (length == 0 || length > sftp::kMaxIncomingPacket)
        return Error::protocol_error("the server sent a packet of invalid length " + std::to_string(length));
      if (c.in_len - pos - kLengthPrefix < length) break;
      sftp::ByteView packet(c.in.data() + pos + kLengthPrefix, length);
      pos += kLengthPrefix + length;
      auto st = c.phase == Phase::greeting ? greeted(index, packet) : dispatch(index, packet);
      if (!st) return st;
    }
    if (pos > 0) {
      std::memmove(c.in.data(), c.in.data() + pos, c.in_len - pos);
      c.in_len -= pos;
    }
    return {};
  }

  // The VERSION that answers an extra channel's INIT: the channel is ready.
  Status greeted(size_t index, sftp::ByteView packet) {
    auto version = sftp::parse_version(packet);
    if (!version) return Error::protocol_error("malformed VERSION on SFTP channel " + std::to_string(index) + ": " +
                                               version.error().message);
    if (version->version < 3)
      return Error::protocol_error("SFTP channel " + std::to_string(index) + " speaks version " +
                                   std::to_string(version->version));
    channels[index].phase = Phase::ready;
    owner->channels_open_.fetch_add(1);
    LOG_DEBUG("SFTP channel %zu open", index);
    return {};
  }

  Status dispatch(size_t index, sftp::ByteView packet) {
    auto id = sftp::reply_id(packet);
    if (!id) return Error::protocol_error("malformed reply: " + id.error().message);
    auto it = in_flight.find(*id);
    if (it == in_flight.end()) {
      if (expired_ids.erase(*id)) return {};  // the caller already got its timeout
      return Error::protocol_error("the server answered request id " + std::to_string(*id) + ", which was never sent");
    }
    if (it->second.channel != index)
      return Error::protocol_error("the server answered request id " + std::to_string(*id) + " on another channel");
    auto reply = sftp::parse_reply(packet);
    if (!reply) return Error::protocol_error("malformed reply to request " + std::to_string(*id) + ": " + reply.error().message);
    complete(it, std::move(*reply));
    return {};
  }

  // The request's reply came: its callback runs, its slot is free.
  void complete(std::unordered_map<uint32_t, InFlight>::iterator it, sftp::Reply reply) {
    ReplyCallback cb = std::move(it->second.on_reply);
    if (it->second.sink.data) --channels[it->second.channel].sinks_in_flight;
    if (it->second.measures_rtt) {
      auto sample = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - it->second.sent).count();
      uint64_t old = owner->rtt_us_.load(std::memory_order_relaxed);
      owner->rtt_us_.store(old == 0 ? uint64_t(sample) : (old * 7 + uint64_t(sample)) / 8, std::memory_order_relaxed);
      uint64_t shortest = owner->min_rtt_us_.load(std::memory_order_relaxed);
      if (shortest == 0 || uint64_t(sample) < shortest) owner->min_rtt_us_.store(std::max<uint64_t>(sample, 1), std::memory_order_relaxed);
    }
    in_flight.erase(it);
    owner->outstanding_.fetch_sub(1);
    cb(std::move(reply));
  }

  // A channel the server will not open or start sftp on: its requests fail, the connection stays.
  void refuse(size_t index, std::string why) {
    SftpChannel& c = channels[index];
    LOG_INFO("SFTP channel %zu not opened: %s", index, why.c_str());
    c.phase = Phase::refused;
    c.refusal = std::move(why);
    opening.reset();
    std::deque<Queued> waiting;
    waiting.swap(c.waiting);
    owner->outstanding_.fetch_sub(waiting.size());
    for (auto& q : waiting) q.on_reply(Error::not_supported(c.refusal));
  }

  // Opens the next wanted channel, one step at a time (non-blocking; libssh2 opens one channel at a
  // time per session). Its INIT then goes out through send_channel and its VERSION comes back
  // through receive_channel.
  Status open_channels() {
    if (!opening) {
      for (size_t index = 1; index < channels.size() && !opening; ++index)
        if (channels[index].phase == Phase::unopened && !channels[index].waiting.empty()) {
          opening = index;
          channels[index].phase = Phase::opening;
          if (owed_since == Clock::time_point{}) owed_since = Clock::now();
        }
      if (!opening) return {};
    }
    const size_t index = *opening;
    SftpChannel& c = channels[index];
    if (c.phase == Phase::opening) {
      LIBSSH2_CHANNEL* opened = libssh2_channel_open_ex(raw(), "session", sizeof("session") - 1, options.window_size,
                                                        LIBSSH2_CHANNEL_PACKET_DEFAULT, nullptr, 0);
      if (!opened) {
        int rc = libssh2_session_last_errno(raw());
        if (rc == LIBSSH2_ERROR_EAGAIN) return note_eagain(Pending::Kind::opener, index), Status{};
        clear_pending();
        if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE)
          return refuse(index, "the server refused another SSH channel (sshd's MaxSessions?): " + libssh2_error(raw(), rc)),
                 Status{};
        return Error::transport_error("opening SFTP channel " + std::to_string(index) + " failed: " + libssh2_error(raw(), rc));
      }
      clear_pending();
      c.channel.reset(opened);
      c.phase = Phase::ignoring_stderr;
    }
    if (c.phase == Phase::ignoring_stderr) {
      // Unread stderr would keep channel_eof() at 0 and fill the window: discard it.
      int rc = libssh2_channel_handle_extended_data2(c.channel.get(), LIBSSH2_CHANNEL_EXTENDED_DATA_IGNORE);
      if (rc == LIBSSH2_ERROR_EAGAIN) return note_eagain(Pending::Kind::opener, index), Status{};
      clear_pending();
      if (rc < 0) return Error::transport_error("setting up SFTP channel " + std::to_string(index) + " failed: " + libssh2_error(raw(), rc));
      c.phase = Phase::starting;
    }
    if (c.phase == Phase::starting) {
      int rc = libssh2_channel_process_startup(c.channel.get(), "subsystem", sizeof("subsystem") - 1, "sftp", 4);
      if (rc == LIBSSH2_ERROR_EAGAIN) return note_eagain(Pending::Kind::opener, index), Status{};
      clear_pending();
      if (rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED || rc == LIBSSH2_ERROR_CHANNEL_FAILURE)
        return refuse(index, "the server refused the sftp subsystem on another channel: " + libssh2_error(raw(), rc)), Status{};
      if (rc < 0) return Error::transport_error("starting sftp on channel " + std::to_string(index) + " failed: " + libssh2_error(raw(), rc));
      c.phase = Phase::greeting;
      c.out = sftp::build_init();
      c.out_pos = 0;
      opening.reset();
    }
    return {};
  }

  // Continues whatever owns the half-sent packet, and nothing else.
  Status continue_pending() {
    const size_t index = pending.channel;
    switch (pending.kind) {
      case Pending::Kind::none: return {};
      case Pending::Kind::writer: return send_channel(index);
      case Pending::Kind::reader: {
        bool got = false;
        return receive_channel(index, got);
      }
      case Pending::Kind::opener: return open_channels();
    }
    return {};
  }

  // Owed: requests in flight, or a channel being opened or greeted.
  bool owes() const {
    if (!in_flight.empty() || opening) return true;
    return std::any_of(channels.begin(), channels.end(), [](const SftpChannel& c) { return c.phase == Phase::greeting; });
  }

  // The server said something (a reply, a keepalive answer): whatever is still owed is owed from now.
  void heard(Clock::time_point now) {
    last_receive = now;
    owed_since = owes() ? now : Clock::time_point{};
  }

  // Fails a dead link, then times out overdue requests of a live but slow server. A link is dead when
  // something is owed and nothing at all came back for liveness.dead_after: measured from when we began
  // waiting, never from the last reply, so a request after a long idle time is not mistaken for a
  // dead link (the cause of "idle 75 s, then every call fails").
  Status expire(Clock::time_point now) {
    if (owed_since != Clock::time_point{} && now - owed_since >= liveness.dead_after)
      return Error::timed_out("the server has not answered anything for " +
                              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - owed_since).count()) +
                              " s (link dead?)");
    // Only a server that has spoken since a request went out is slow rather than gone: a silent
    // link is left to the rule above.
    bool any_overdue = false;
    for (const auto& [id, request] : in_flight) any_overdue |= request.deadline <= now && last_receive >= request.sent;
    if (!any_overdue) return {};
    // The server is alive but slow on these: they alone time out; a late reply to them is dropped.
    std::vector<ReplyCallback> overdue;
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      if (it->second.deadline <= now && last_receive >= it->second.sent) {
        if (it->second.sink.data) --channels[it->second.channel].sinks_in_flight;
        overdue.push_back(std::move(it->second.on_reply));
        expired_ids.insert(it->first);
        it = in_flight.erase(it);
      } else {
        ++it;
      }
    }
    owner->outstanding_.fetch_sub(overdue.size());
    for (auto& cb : overdue) cb(Error::timed_out("the server did not answer in time"));
    return {};
  }

  Clock::time_point next_wakeup(Clock::time_point now) const {
    auto wakeup = now + std::chrono::milliseconds(250);  // also bounds how late a liveness check can be
    for (const auto& [id, request] : in_flight) wakeup = std::min(wakeup, request.deadline);
    return wakeup;
  }

  // One pass: whatever owns a half-sent packet first; then send, receive, send again (a reply frees
  // an in-flight slot), open a wanted channel, expire, keepalive.
  Status step() {
    distribute();
    if (auto st = continue_pending(); !st) return st;
    if (!half_sent())
      if (auto st = send_all(); !st) return st;
    if (!half_sent())
      if (auto st = receive_all(); !st) return st;
    if (!half_sent())
      if (auto st = send_all(); !st) return st;
    if (!half_sent())
      if (auto st = open_channels(); !st) return st;
    auto now = Clock::now();
    if (auto st = expire(now); !st) return st;
    probe_if_silent(now);
    return {};
  }

  // A keepalive (answered by sshd itself, even while sftp-server is busy) after a silence: only with
  // nothing half-sent, nothing queued and room in the socket, so the small probe goes out whole and
  // never interleaves with a batch.
  void probe_if_silent(Clock::time_point now) {
    const auto interval = in_flight.empty() ? liveness.idle_probe : liveness.busy_probe;
    if (now - std::max(last_receive, last_probe) < interval) return;
    if (half_sent() || opening) return;
    if (!std::all_of(channels.begin(), channels.end(), [](const SftpChannel& c) { return c.drained(); })) return;
    pollfd room{session->socket_fd(), POLLOUT, 0};
    if (::poll(&room, 1, 0) != 1 || !(room.revents & POLLOUT)) return;
    int seconds_to_next = 0;
    if (libssh2_keepalive_send(raw(), &seconds_to_next) != 0) return;
    last_probe = now;
    if (owed_since == Clock::time_point{}) owed_since = now;
  }

  bool queued_for_a_channel() const {
    return std::any_of(channels.begin(), channels.end(), [](const SftpChannel& c) {
      return c.readable() && (libssh2_poll_channel_read(c.channel.get(), 0) || libssh2_channel_eof(c.channel.get()));
    });
  }

  Status wait_for_io() {
    pollfd fds[2] = {{session->socket_fd(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
    if (half_sent() || outbound_blocked()) fds[0].events |= POLLOUT;
    auto now = Clock::now();
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_wakeup(now) - now).count();
    // channel_write reads the socket before it sends: replies it pulled into libssh2's queue after
    // this step's receive_all are there for no poll to see. Then only look, do not wait.
    if (!half_sent() && queued_for_a_channel()) wait = 0;
    int ready = ::poll(fds, 2, static_cast<int>(std::clamp<long long>(wait, 0, 1000)));
    if (ready < 0 && errno != EINTR) return Error::transport_error(std::string("poll failed: ") + std::strerror(errno));
    // A hang-up with data still readable is read first; libssh2 then reports the precise error.
    if (fds[0].revents & POLLIN) heard(Clock::now());
    if ((fds[0].revents & (POLLERR | POLLHUP)) && !(fds[0].revents & POLLIN))
      return Error::transport_error("the connection to the server was closed");
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      ssize_t ignored = ::read(wake_fd, &count, sizeof count);
      (void)ignored;
    }
    return {};
  }

  void run() {
    Status result;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (stopping) break;
      }
      result = step();
      if (!result) break;
      result = wait_for_io();
      if (!result) break;
    }
    if (result) {  // stopped: by the destructor (a normal close) or by fail(reason)
      Error closed = Error::transport_error("the connection was closed");
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (!failure_reason.empty()) closed.message = failure_reason;
        else failure_reason = closed.message;
      }
      owner->failed_.store(true);
      fail_all(Error::disconnected_error(closed.message));
      return;
    }
    Error failure = result.take_error();
    mark_failed(failure.message);
    if (options.on_failure) options.on_failure(failure.message);
    // A malformed reply keeps its kind (a misbehaving server is not retried blindly); anything else
    // is a dropped link: the requests may or may not have run.
    if (failure.kind != Error::Kind::protocol) failure = Error::disconnected_error(failure.message);
    fail_all(failure);
  }
};

Connection::Connection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { impl_->owner = this; }

Result<std::unique_ptr<Connection>> Connection::open(const ssh::SessionOptions& ssh_options,
                                                     const ConnectionOptions& options) {
  auto session = ssh::Session::connect(ssh_options);
  if (!session) return session.take_error();
  LIBSSH2_SESSION* raw = (*session)->raw();
  // The blocking handshake below must not hang either.
  libssh2_session_set_timeout(raw, static_cast<long>(std::max<int64_t>(ssh_options.connect_timeout.count(), 1000)));
  auto channel = (*session)->open_sftp_channel(options.window_size);
  if (!channel) return channel.take_error();

  // INIT/VERSION and limits are exchanged blocking (bounded by the timeout above); the I/O thread
  // switches to non-blocking when it takes over.
  libssh2_session_set_blocking(raw, 1);
  if (auto st = write_all_blocking(channel->get(), raw, sftp::build_init()); !st) return st.take_error();
  auto version_packet = read_packet_blocking(channel->get(), raw);
  if (!version_packet) return version_packet.take_error();
  auto version = sftp::parse_version(*version_packet);
  if (!version) return Error::protocol_error("the server's SFTP VERSION reply is malformed: " + version.error().message);
  if (version->version < 3)
    return Error::protocol_error("the server speaks SFTP version " + std::to_string(version->version) +
                                 "; sftpfs needs version 3");

  ServerFeatures features;
  features.version = std::move(*version);
  features.max_read = features.max_write = std::min(options.default_io_size, options.max_io_size);
  if (auto order = features.version.extensions.find("symlink-order@rjk.greenend.org.uk");
      order != features.version.extensions.end())
    features.symlink_draft_order = order->second == "linkpath-targetpath";

  if (features.has(sftp::kExtLimits)) {
    if (auto st = write_all_blocking(channel->get(), raw, sftp::build_limits(1)); !st) return st.take_error();
    auto packet = read_packet_blocking(channel->get(), raw);
    if (!packet) return packet.take_error();
    auto reply = sftp::parse_reply(*packet);
    if (reply && std::holds_alternative<sftp::ExtendedReply>(reply->body)) {
      auto limits = sftp::parse_limits(std::get<sftp::ExtendedReply>(reply->body).payload);
      if (limits) {
        features.limits = *limits;
        // 0 means "no limit stated": keep our default. A stated limit is clamped to what we can carry,
        // and a request must also fit the server's packet limit with its header (~64 bytes + handle).
        auto clamp = [&](uint64_t stated) -> uint32_t {
          uint64_t size = stated == 0 ? options.default_io_size : stated;
          if (limits->max_packet_length > 1024) size = std::min<uint64_t>(size, limits->max_packet_length - 1024);
          return static_cast<uint32_t>(std::clamp<uint64_t>(size, 512, options.max_io_size));
        };
        features.max_read = clamp(limits->max_read_length);
        features.max_write = clamp(limits->max_write_length);
      } else {
        LOG_WARN("ignoring a malformed limits@openssh.com reply: %s", limits.error().message.c_str());
      }
    }
  }

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->wake_fd < 0) return Error::errno_error(errno, "eventfd failed");
  impl->session = std::move(*session);
  impl->channels.resize(std::max<size_t>(options.channels, 1));
  impl->channels[0].phase = Impl::Phase::ready;
  impl->channels[0].channel = std::move(*channel);
  impl->liveness = Liveness::of(ssh_options, options);
  libssh2_session_set_blocking(impl->session->raw(), 0);
  // Our loop decides when to probe (probe_if_silent); libssh2 only rate-limits at this floor.
  libssh2_keepalive_config(impl->session->raw(), 1, static_cast<unsigned>(kMinKeepalive.count()));

  std::unique_ptr<Connection> connection(new Connection(std::move(impl)));
  connection->features_ = std::move(features);
  LOG_INFO("connected to %s:%u: SFTP v%u, read %u / write %u bytes per request", ssh_options.host.c_str(),
           ssh_options.port, connection->features_.version.version, connection->features_.max_read,
           connection->features_.max_write);
  connection->impl_->thread = std::thread([impl = connection->impl_.get()] { impl->run(); });
  return connection;
}

Connection::~Connection() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake();
  wait_stopped();
  // The thread completed everything it knew of; a submit that raced with the stop is completed here.
  impl_->fail_all(Error::disconnected_error("the connection was closed"));
  // A failed link gets no goodbye: cut the socket so libssh2's close returns at once.
  if (failed_.load()) ::shutdown(impl_->session->socket_fd(), SHUT_RDWR);
  // Close politely but briefly: a dead server must not hold up an unmount.
  LIBSSH2_SESSION* raw = impl_->session->raw();
  libssh2_session_set_blocking(raw, 1);
  libssh2_session_set_timeout(raw, 2000);
  for (auto it = impl_->channels.rbegin(); it != impl_->channels.rend(); ++it) it->channel.reset();
}

void Connection::submit(sftp::Bytes packet, ReplyCallback on_reply, Clock::time_point deadline, size_t channel,
                        Payload payload, Sink sink) {
  if (packet.size() < sftp::kIdOffset + 4) {
    on_reply(Error::protocol_error("internal: request packet too short"));
    return;
  }
  if (channel >= impl_->channels.size()) {
    on_reply(Error::protocol_error("internal: no SFTP channel " + std::to_string(channel)));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (!failed_.load() && !impl_->stopping) {
      impl_->submitted.push_back(
          {std::move(packet), std::move(on_reply), deadline, channel, std::move(payload), std::move(sink)});
      outstanding_.fetch_add(1);
      impl_->wake();
      return;
    }
  }
  on_reply(Error::disconnected_error("not connected: " + failure()));
}

size_t Connection::channel_count() const { return impl_->channels.size(); }

const ssh::SessionInfo& Connection::session_info() const { return impl_->session->info(); }

std::string Connection::failure() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->failure_reason;
}

void Connection::cut() { ::shutdown(impl_->session->socket_fd(), SHUT_RDWR); }

void Connection::wait_stopped() {
  std::lock_guard<std::mutex> lock(impl_->join_mutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

Liveness Liveness::of(const ssh::SessionOptions& ssh_options, const ConnectionOptions& options) {
  using std::chrono::milliseconds;
  const milliseconds interval = ssh_options.server_alive_interval;
  if (interval.count() > 0) {
    const int count = std::max(1, ssh_options.server_alive_count_max);
    return {interval, interval, interval * count};
  }
  // A short request timeout asks for quick answers: the link is also declared dead sooner.
  const milliseconds busy = std::clamp<milliseconds>(options.request_timeout / 4, kMinKeepalive, milliseconds(5000));
  const milliseconds dead = std::clamp<milliseconds>(options.request_timeout, 2 * busy, milliseconds(15000));
  return {busy, milliseconds(15000), dead};
}

void Connection::fail(std::string reason) {
  impl_->mark_failed(reason);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake();
}

}  // namespace sftpfs::client
