#include "client/link.hpp"

#include <algorithm>

#include "util/log.hpp"

namespace sftpfs::client {

namespace {

// A request under which this many connections dropped fails instead of going round again: a request
// that itself brings the server down must not do so forever.
constexpr int kMaxBreaks = 3;
constexpr auto kFirstDelay = std::chrono::milliseconds(1000);

long long seconds_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - t).count();
}

ssh::SessionOptions with_cancel(ssh::SessionOptions options, std::shared_ptr<const std::atomic<bool>> cancel) {
  options.cancel = std::move(cancel);
  return options;
}

bool is_error_status(const Result<sftp::Reply>& reply) {
  if (!reply) return false;
  auto* status = std::get_if<sftp::StatusReply>(&reply->body);
  return status && status->code != sftp::SSH_FX_OK;
}

}  // namespace

const char* state_name(ConnectionStatus::State state) {
  switch (state) {
    case ConnectionStatus::State::connected: return "connected";
    case ConnectionStatus::State::reconnecting: return "reconnecting";
    case ConnectionStatus::State::stopped: return "stopped";
  }
  return "?";
}

Link::Link(size_t index, ssh::SessionOptions ssh_options, ConnectionOptions connection_options, LinkOptions options)
    : index_(index), cancel_(std::make_shared<std::atomic<bool>>(false)), ssh_options_(with_cancel(std::move(ssh_options), cancel_)),
      connection_options_(std::move(connection_options)), options_(options) {}

Result<std::unique_ptr<Link>> Link::open(size_t index, const ssh::SessionOptions& ssh_options,
                                         const ConnectionOptions& connection_options, const LinkOptions& options) {
  std::unique_ptr<Link> link(new Link(index, ssh_options, connection_options, options));
  auto connection = Connection::open(link->ssh_options_, link->options_for(0));
  if (!connection) return connection.take_error();
  link->features_ = (*connection)->features();
  link->session_info_ = (*connection)->session_info();
  link->connection_ = std::shared_ptr<Connection>(std::move(*connection));
  link->worker_ = std::thread([l = link.get()] { l->run(); });
  return link;
}

Link::~Link() { shutdown(); }

ConnectionOptions Link::options_for(uint64_t generation) {
  ConnectionOptions options = connection_options_;
  options.on_failure = [this, generation](const std::string& reason) {
    std::lock_guard<std::mutex> lock(mutex_);
    mark_down_locked(generation, reason);
  };
  return options;
}

void Link::send(Request request) {
  // A recheck held by a new drop goes first on the next replay: it belongs to a request already answered.
  if (request.sequence == 0 && !request.part_of_recheck) request.sequence = next_sequence_.fetch_add(1);
  if (request.file)
    if (auto why = request.file->lost()) return request.done(Error::errno_error(EIO, *why));
  std::shared_ptr<Connection> connection;
  uint64_t generation = 0;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (state_ == State::stopped || stopping_) {
      Error error = stopping_ ? Error::disconnected_error("unmounting")
                   : options_.reconnect ? unreachable()
                                        : Error::disconnected_error("not connected: " + last_error_);
      lock.unlock();
      return request.done(std::move(error));
    }
    if (state_ != State::connected || (replaying_ && !request.part_of_recheck) || !connection_)
      return hold_locked(std::move(request));
    connection = connection_;
    generation = generation_;
  }
  submit(connection, generation, std::move(request));
}

void Link::submit(const std::shared_ptr<Connection>& connection, uint64_t generation, Request request) {
  auto packet = request.build();
  if (!packet) return request.done(packet.take_error());
  const auto deadline = request.deadline;
  const size_t channel = request.channel;
  Payload payload = request.payload;
  Sink sink = request.sink;
  auto shared = std::make_shared<Request>(std::move(request));
  connection->submit(std::move(*packet),
                     [this, generation, shared](Result<sftp::Reply> reply) {
                       on_reply(generation, std::move(*shared), std::move(reply));
                     },
                     deadline, channel, std::move(payload), std::move(sink));
}

void Link::on_reply(uint64_t generation, Request request, Result<sftp::Reply> reply) {
  if (reply || reply.error().kind != Error::Kind::disconnected) return deliver(std::move(request), std::move(reply));
  // The connection dropped under it: it may or may not have run.
  if (request.is_close) return request.done(sftp::Reply{0, sftp::StatusReply{sftp::SSH_FX_OK, "", ""}});
  ++request.breaks;
  std::unique_lock<std::mutex> lock(mutex_);
  mark_down_locked(generation, reply.error().message);
  const bool replayable = options_.reconnect && !stopping_ && state_ != State::stopped &&
                          request.replay != Replay::never && request.breaks <= kMaxBreaks;
  if (replayable) {
    request.replayed = true;
    return hold_locked(std::move(request));
  }
  Error error = reply.take_error();
  if (options_.reconnect && request.replay == Replay::never)
    error = Error::unreachable_error("the connection dropped during this request, which cannot be repeated: " + error.message);
  else if (options_.reconnect && request.breaks > kMaxBreaks)
    error = Error::unreachable_error("the connection dropped " + std::to_string(request.breaks) +
                                     " times under this request; giving up on it");
  lock.unlock();
  request.done(std::move(error));
}

void Link::deliver(Request request, Result<sftp::Reply> reply) {
  if (request.replayed && request.recheck && is_error_status(reply))
    return request.recheck(std::move(reply), std::move(request.done));
  request.done(std::move(reply));
}

void Link::mark_down_locked(uint64_t generation, const std::string& reason) {
  if (generation != generation_ || state_ != State::connected) return;
  last_error_ = reason;
  since_ = std::chrono::system_clock::now();
  down_since_ = Clock::now();
  attempts_ = 0;
  if (!options_.reconnect || stopping_) {
    state_ = State::stopped;
    if (!stopping_)
      LOG_ERROR("connection %zu to %s dropped: %s (reconnect is off: the mount stays disconnected)", index_,
                ssh_options_.host.c_str(), reason.c_str());
    return;
  }
  state_ = State::reconnecting;
  LOG_WARN("connection %zu to %s dropped: %s; reconnecting (calls wait up to %lld s)", index_,
           ssh_options_.host.c_str(), reason.c_str(),
           static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(options_.wait).count()));
  wake_.notify_all();
}

void Link::hold_locked(Request request) {
  request.give_up = Clock::now() + options_.wait;
  held_.push_back(std::move(request));
}

Error Link::unreachable() const {
  std::string why = state_ == State::stopped ? "stopped reconnecting: " + last_error_
                                             : "no connection for " + std::to_string(seconds_since(down_since_)) +
                                                   " s (" + last_error_ + ")";
  return Error::unreachable_error("server " + ssh_options_.host + " unreachable: " + why);
}

void Link::fail_requests(std::deque<Request> requests, const Error& error) {
  for (auto& request : requests) request.done(error);
}

void Link::expire_held(Clock::time_point now) {
  std::deque<Request> expired;
  Error error = Error::unreachable_error("");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_.empty()) return;
    const bool all = state_ == State::stopped || stopping_;
    for (auto it = held_.begin(); it != held_.end();) {
      if (all || it->give_up <= now) {
        expired.push_back(std::move(*it));
        it = held_.erase(it);
      } else {
        ++it;
      }
    }
    if (expired.empty()) return;
    error = unreachable();
  }
  LOG_WARN("connection %zu: %zu call(s) waited their reconnect_wait and fail with EIO: %s", index_, expired.size(),
           error.message.c_str());
  fail_requests(std::move(expired), error);
}

void Link::adopt(const FileRef& file) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Forget files that are gone, so the list stays as long as what is open.
  if (files_.size() >= 64 && files_.size() % 64 == 0)
    files_.erase(std::remove_if(files_.begin(), files_.end(), [](const auto& w) { return w.expired(); }), files_.end());
  files_.push_back(file);
}

std::vector<FileRef> Link::open_files() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<FileRef> files;
  files_.erase(std::remove_if(files_.begin(), files_.end(),
                              [&](const auto& weak) {
                                auto file = weak.lock();
                                if (!file) return true;
                                if (!file->closing()) files.push_back(std::move(file));
                                return false;
                              }),
               files_.end());
  return files;
}

bool Link::up() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_ == State::connected && connection_ && connection_->alive();
}

size_t Link::outstanding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return (connection_ ? connection_->outstanding() : 0) + held_.size();
}

std::chrono::microseconds Link::min_rtt() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return connection_ ? connection_->min_rtt() : std::chrono::microseconds{0};
}

ConnectionStatus Link::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ConnectionStatus status;
  status.state = state_;
  status.since = since_;
  status.reconnects = reconnects_;
  status.attempts = attempts_;
  status.held = held_.size();
  status.bytes_sent = bytes_sent_before_;
  status.bytes_received = bytes_received_before_;
  status.bytes_received_in_place = bytes_in_place_before_;
  if (connection_) {  // gone after shutdown
    status.rtt = connection_->rtt();
    status.in_flight = connection_->outstanding();
    status.channels_open = connection_->channels_open();
    status.channels = connection_->channel_count();
    status.bytes_sent += connection_->bytes_sent();
    status.bytes_received += connection_->bytes_received();
    status.bytes_received_in_place += connection_->bytes_received_in_place();
  }
  status.last_error = last_error_;
  return status;
}

void Link::cut() {
  std::shared_ptr<Connection> connection;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    connection = connection_;
  }
  if (connection) connection->cut();
}

void Link::shutdown() {
  std::shared_ptr<Connection> connection;
  std::deque<Request> held;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    cancel_->store(true);
    wake_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    held.swap(held_);
    connection = std::move(connection_);
  }
  fail_requests(std::move(held), Error::disconnected_error("unmounting"));
  connection.reset();  // closes it; what it still had completes with an error
}

void Link::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || state_ == State::reconnecting; });
    if (stopping_) return;
    auto old = connection_;
    lock.unlock();
    // Every callback of the dropped connection has run once its thread ends: what it had is held.
    old->wait_stopped();
    auto fresh = reconnect();
    if (!fresh) {
      lock.lock();
      if (stopping_) return;
      continue;  // stopped (host key): expire_held fails what waits; nothing more to do here
    }
    size_t reopened = 0;
    if (!reopen_files(*fresh, reopened)) {
      LOG_WARN("connection %zu: the new connection dropped while reopening files; trying again", index_);
      lock.lock();
      continue;
    }
    lock.lock();
    bytes_sent_before_ += old->bytes_sent();
    bytes_received_before_ += old->bytes_received();
    bytes_in_place_before_ += old->bytes_received_in_place();
    old.reset();
    connection_ = fresh;
    ++generation_;
    state_ = State::connected;
    // Its on_failure, if it dropped before this point, spoke for a generation not yet current.
    if (!fresh->alive()) mark_down_locked(generation_, fresh->failure());
    since_ = std::chrono::system_clock::now();
    ++reconnects_;
    const auto outage = Clock::now() - down_since_;
    replaying_ = true;
    size_t replayed = 0;
    while (!held_.empty() && state_ == State::connected && !stopping_) {
      std::deque<Request> batch;
      batch.swap(held_);
      std::stable_sort(batch.begin(), batch.end(), [](const Request& a, const Request& b) { return a.sequence < b.sequence; });
      replay_locked(lock, fresh, std::move(batch), replayed);
    }
    replaying_ = false;
    LOG_WARN("connection %zu: reconnected to %s after %.1f s (%zu handle(s) reopened, %zu request(s) replayed)",
             index_, ssh_options_.host.c_str(), std::chrono::duration<double>(outage).count(), reopened, replayed);
  }
}

// Sends `batch` in order on `fresh`. A request that may already have run before the drop (Replay::recheck)
// is a barrier: what follows waits until its reply, and the recheck an error reply starts, are in, so
// that a later request (a rename of the directory a replayed mkdir made) cannot change what the
// recheck sees. A new drop meanwhile puts the unsent rest back on hold.
void Link::replay_locked(std::unique_lock<std::mutex>& lock, const std::shared_ptr<Connection>& fresh,
                         std::deque<Request> batch, size_t& replayed) {
  const uint64_t generation = generation_;
  while (!batch.empty()) {
    if (state_ != State::connected || stopping_ || generation != generation_) {
      for (auto& request : batch) held_.push_back(std::move(request));
      return;
    }
    Request request = std::move(batch.front());
    batch.pop_front();
    const bool barrier = request.replayed && request.replay == Replay::recheck;
    if (request.replayed) ++replayed;
    auto settled = std::make_shared<bool>(false);
    if (barrier)
      request.done = [this, settled, done = std::move(request.done)](Result<sftp::Reply> reply) {
        done(std::move(reply));
        std::lock_guard<std::mutex> guard(mutex_);
        *settled = true;
        wake_.notify_all();
      };
    lock.unlock();
    submit(fresh, generation, std::move(request));
    lock.lock();
    if (barrier)
      wake_.wait(lock, [&] { return *settled || stopping_ || state_ != State::connected || generation != generation_; });
  }
}

std::shared_ptr<Connection> Link::reconnect() {
  auto delay = kFirstDelay;
  for (uint64_t attempt = 1;; ++attempt) {
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return nullptr;
      attempts_ = attempt;
      generation = generation_ + 1;
    }
    LOG_WARN("connection %zu: reconnecting to %s port %u (attempt %llu)", index_, ssh_options_.host.c_str(),
             ssh_options_.port, static_cast<unsigned long long>(attempt));
    auto connection = Connection::open(ssh_options_, options_for(generation));
    if (connection) return std::shared_ptr<Connection>(std::move(*connection));
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_) return nullptr;
    last_error_ = connection.error().message;
    if (ssh::is_host_key_refused(connection.error())) {
      LOG_ERROR("connection %zu: stopped reconnecting, the server's host key is not the one we trust: %s", index_,
                connection.error().message.c_str());
      state_ = State::stopped;
      since_ = std::chrono::system_clock::now();
      return nullptr;
    }
    LOG_WARN("connection %zu: reconnect attempt %llu failed: %s; next in %lld s", index_,
             static_cast<unsigned long long>(attempt), connection.error().message.c_str(),
             static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(delay).count()));
    wake_.wait_for(lock, delay, [&] { return stopping_; });
    delay = std::min<std::chrono::milliseconds>(delay * 2, options_.max_delay);
  }
}

// Reopens every open file on the new connection, all pipelined (one round trip): OPEN without
// CREAT/EXCL/TRUNC (APPEND too: the filesystem positions appends itself) and a STAT behind it.
// A file that was deleted, or that changed on the server since we last saw it and was not written
// by us since, is not reopened: it is lost, and its requests fail with EIO.
bool Link::reopen_files(Connection& connection, size_t& reopened) {
  struct Reopen {
    FileRef file;
    std::optional<Result<sftp::Reply>> open, stat;
  };
  auto files = open_files();
  std::vector<std::shared_ptr<Reopen>> pending;
  std::mutex mutex;
  std::condition_variable done;
  size_t waiting = 0;
  auto complete = [&](std::optional<Result<sftp::Reply>>& slot, Result<sftp::Reply> reply) {
    std::lock_guard<std::mutex> lock(mutex);
    slot = std::move(reply);
    if (--waiting == 0) done.notify_all();
  };
  for (auto& file : files) {
    if (file->lost()) continue;
    const std::string path = file->path();
    if (file->unlinked()) {
      file->mark_lost(path + " was deleted while open, and the connection dropped: its data is no longer reachable");
      LOG_WARN("connection %zu: not reopening %s: it was deleted while open", index_, path.c_str());
      continue;
    }
    auto one = std::make_shared<Reopen>();
    one->file = file;
    pending.push_back(one);
    {
      std::lock_guard<std::mutex> lock(mutex);
      waiting += file->is_directory ? 1 : 2;
    }
    const uint32_t pflags = file->pflags & ~(sftp::SSH_FXF_CREAT | sftp::SSH_FXF_EXCL | sftp::SSH_FXF_TRUNC | sftp::SSH_FXF_APPEND);
    // On the file's own channel: its handle is only valid there.
    connection.submit(file->is_directory ? sftp::build_opendir(0, path) : sftp::build_open(0, path, pflags, {}),
                      [one, &complete](Result<sftp::Reply> reply) { complete(one->open, std::move(reply)); }, {},
                      file->channel);
    if (!file->is_directory)
      connection.submit(sftp::build_stat(0, path),
                        [one, &complete](Result<sftp::Reply> reply) { complete(one->stat, std::move(reply)); }, {},
                        file->channel);
  }
  {
    std::unique_lock<std::mutex> lock(mutex);
    done.wait(lock, [&] { return waiting == 0; });  // the connection's deadlines bound this
  }
  bool connection_ok = true;
  for (auto& one : pending) {
    const std::string path = one->file->path();
    auto& open = *one->open;
    if (!open && open.error().kind == Error::Kind::disconnected) connection_ok = false;
    if (!connection_ok) continue;
    auto* handle = open ? std::get_if<sftp::HandleReply>(&open->body) : nullptr;
    if (!handle) {
      std::string why = !open ? open.error().message
                      : std::holds_alternative<sftp::StatusReply>(open->body)
                          ? std::get<sftp::StatusReply>(open->body).message
                          : "unexpected reply";
      one->file->mark_lost("reopening " + path + " after the reconnect failed: " + why);
      LOG_WARN("connection %zu: could not reopen %s: %s", index_, path.c_str(), why.c_str());
      continue;
    }
    auto seen = one->file->seen();
    const sftp::Attrs* now = nullptr;
    if (one->stat && *one->stat)
      if (auto* attrs = std::get_if<sftp::AttrsReply>(&(*one->stat)->body)) now = &attrs->attrs;
    if (seen && now && !one->file->written_since_seen() &&
        (((now->flags & sftp::SSH_FILEXFER_ATTR_SIZE) && now->size != seen->size) ||
         ((now->flags & sftp::SSH_FILEXFER_ATTR_ACMODTIME) && now->mtime != seen->mtime))) {
      one->file->mark_lost(path + " changed on the server while the connection was down (size " +
                           std::to_string(seen->size) + " -> " + std::to_string(now->size) +
                           "): reading on could mix old and new contents");
      LOG_WARN("connection %zu: not reopening %s: it changed on the server meanwhile", index_, path.c_str());
      connection.submit(sftp::build_close(0, handle->handle), [](Result<sftp::Reply>) {}, {}, one->file->channel);
      continue;
    }
    one->file->replace_handle(std::move(handle->handle));
    ++reopened;
  }
  return connection_ok && connection.alive();
}

}  // namespace sftpfs::client
