#include "client/client.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "client/link.hpp"
#include "client/server_quirks.hpp"
#include "util/log.hpp"

namespace sftpfs::client {

namespace {

using sftp::Reply;

std::string reply_kind(const Reply& reply) {
  static const char* names[] = {"STATUS", "HANDLE", "DATA", "NAME", "ATTRS", "EXTENDED_REPLY"};
  return names[reply.body.index()];
}

Error unexpected(const Reply& reply, const char* wanted) {
  return Error::protocol_error(std::string("the server answered with ") + reply_kind(reply) + " where " + wanted +
                               " was expected");
}

Error status_error(const sftp::StatusReply& status) {
  std::string message = status.message.empty() ? sftp::status_name(status.code) : status.message;
  return Error::status(status.code, std::move(message));
}

// Adapters from a raw reply to the typed result each operation promises.
ReplyCallback expect_ok(Done done) {
  return [done = std::move(done)](Result<Reply> reply) {
    if (!reply) return done(reply.take_error());
    if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) {
      if (status->code == sftp::SSH_FX_OK) return done({});
      return done(status_error(*status));
    }
    done(unexpected(*reply, "STATUS"));
  };
}

ReplyCallback expect_attrs(Callback<sftp::Attrs> done) {
  return [done = std::move(done)](Result<Reply> reply) {
    if (!reply) return done(reply.take_error());
    if (auto* attrs = std::get_if<sftp::AttrsReply>(&reply->body)) return done(std::move(attrs->attrs));
    if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) return done(status_error(*status));
    done(unexpected(*reply, "ATTRS"));
  };
}

// REALPATH, READLINK, home-directory and expand-path answer NAME with exactly one entry.
ReplyCallback expect_single_name(Callback<std::string> done) {
  return [done = std::move(done)](Result<Reply> reply) {
    if (!reply) return done(reply.take_error());
    if (auto* name = std::get_if<sftp::NameReply>(&reply->body)) {
      if (name->names.size() != 1)
        return done(Error::protocol_error("expected one name, the server sent " + std::to_string(name->names.size())));
      return done(std::move(name->names.front().filename));
    }
    if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) return done(status_error(*status));
    done(unexpected(*reply, "NAME"));
  };
}

sftp::Reply ok_reply() { return sftp::Reply{0, sftp::StatusReply{sftp::SSH_FX_OK, "", ""}}; }

bool path_is_within(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

}  // namespace

struct Client::Impl {
  // Before the links: destroyed after them, whose last callbacks may still use it.
  std::unique_ptr<ServerQuirks> quirks;
  std::vector<std::unique_ptr<Link>> links;
  size_t channels = 1;  // SFTP channels per link (ConnectionOptions::channels)
  std::atomic<size_t> round_robin{0};
  // Fails requests held past their reconnect_wait, on every link, even while a link's worker is
  // inside a long connect attempt.
  std::thread ticker;
  std::mutex ticker_mutex;
  std::condition_variable ticker_wake;
  bool ticker_stop = false;
  std::vector<std::pair<Clock::time_point, std::function<void()>>> timers;  // Client::after

  // Takes the timers due by `now` (all of them at shutdown). ticker_mutex held.
  std::vector<std::function<void()>> take_timers(Clock::time_point now, bool all) {
    std::vector<std::function<void()>> due;
    for (auto it = timers.begin(); it != timers.end();) {
      if (all || it->first <= now) {
        due.push_back(std::move(it->second));
        it = timers.erase(it);
      } else {
        ++it;
      }
    }
    return due;
  }

  // Metadata goes to the least busy connection, so a large transfer on one does not stall `ls`.
  size_t pick() {
    size_t start = round_robin.fetch_add(1) % links.size();
    size_t best = start;
    bool best_up = links[best]->up();
    size_t best_load = links[best]->outstanding();
    for (size_t i = 1; i < links.size(); ++i) {
      size_t index = (start + i) % links.size();
      if (!links[index]->up()) continue;
      size_t load = links[index]->outstanding();
      if (!best_up || load < best_load) {
        best = index;
        best_up = true;
        best_load = load;
      }
    }
    return best;
  }

  Link& at(size_t index) { return *links[index % links.size()]; }
  const ServerFeatures& features() const { return links.front()->features(); }

  // A path request: the packet is built once and sent again as is after a drop.
  void send(size_t index, sftp::Bytes packet, ReplyCallback done, Replay replay = Replay::resend,
            std::function<void(Result<Reply>, ReplyCallback)> recheck = {}, size_t channel = 0) {
    Request request;
    request.build = [packet = std::make_shared<sftp::Bytes>(std::move(packet))]() -> Result<sftp::Bytes> { return *packet; };
    request.done = std::move(done);
    request.replay = replay;
    request.recheck = std::move(recheck);
    request.channel = channel;
    at(index).send(std::move(request));
  }
  void send(sftp::Bytes packet, ReplyCallback done, Replay replay = Replay::resend,
            std::function<void(Result<Reply>, ReplyCallback)> recheck = {}) {
    send(pick(), std::move(packet), std::move(done), replay, std::move(recheck));
  }
  // A request a recheck makes: it goes out ahead of the replay that waits for it (see Request).
  void send_for_recheck(size_t index, sftp::Bytes packet, ReplyCallback done, size_t channel = 0) {
    Request request;
    request.build = [packet = std::make_shared<sftp::Bytes>(std::move(packet))]() -> Result<sftp::Bytes> { return *packet; };
    request.done = std::move(done);
    request.part_of_recheck = true;
    request.channel = channel;
    at(index).send(std::move(request));
  }
  // A handle request: built with the file's handle at the time it goes out (a reconnect replaces it).
  void send_on(const FileRef& file, std::function<sftp::Bytes(const std::string& handle)> build, ReplyCallback done,
               Replay replay = Replay::resend, Clock::time_point deadline = {}, Payload payload = {},
               Sink sink = {}) {
    Request request;
    request.file = file;
    request.payload = std::move(payload);
    request.sink = std::move(sink);
    request.channel = file->channel;
    request.build = [file, build = std::move(build)]() -> Result<sftp::Bytes> { return build(file->handle()); };
    request.done = std::move(done);
    request.replay = replay;
    request.deadline = deadline;
    at(file->connection).send(std::move(request));
  }

  bool require(std::string_view extension, const std::function<void(Error)>& fail) {
    if (features().has(extension)) return true;
    fail(Error::not_supported("the server does not offer " + std::string(extension)));
    return false;
  }

  // After a replayed request failed: does the server show that the first one did the work?
  // `confirmed(attrs or error)` decides from an LSTAT of `path`.
  std::function<void(Result<Reply>, ReplyCallback)> recheck_by_lstat(
      size_t index, std::string path, std::function<bool(const Result<sftp::Attrs>&)> confirmed) {
    return [this, index, path = std::move(path), confirmed = std::move(confirmed)](Result<Reply> failed, ReplyCallback done) {
      send_for_recheck(index, sftp::build_lstat(0, path),
           expect_attrs([failed = std::move(failed), done = std::move(done), confirmed, path](Result<sftp::Attrs> attrs) mutable {
             if (confirmed(attrs)) {
               LOG_INFO("a request on %s replayed after a reconnect had already been done by the server", path.c_str());
               return done(ok_reply());
             }
             done(std::move(failed));
           }));
    };
  }

  std::vector<FileRef> open_files() {
    std::vector<FileRef> all;
    for (auto& link : links) {
      auto files = link->open_files();
      all.insert(all.end(), files.begin(), files.end());
    }
    return all;
  }

  // Link and channel of a lane: lanes 0 .. links-1 are channel 0 of each link, the next ones channel 1, ...
  size_t lane_count() const { return links.size() * channels; }

  void open_on(size_t lane, std::string path, uint32_t pflags, sftp::Attrs attrs, bool directory,
               Callback<FileRef> done) {
    lane %= lane_count();
    const size_t index = lane % links.size();
    const size_t channel = lane / links.size();
    auto packet = directory ? sftp::build_opendir(0, path) : sftp::build_open(0, path, pflags, attrs);
    // An exclusive create that fails when replayed may have been done by the first send: open the
    // file that is there without CREAT/EXCL (the drop leaves no way to tell it from another's file
    // made at the same moment; see README).
    std::function<void(Result<Reply>, ReplyCallback)> recheck;
    const bool exclusive = (pflags & sftp::SSH_FXF_CREAT) && (pflags & sftp::SSH_FXF_EXCL);
    if (exclusive)
      recheck = [this, index, channel, path, pflags](Result<Reply>, ReplyCallback reopen_done) {
        send_for_recheck(index, sftp::build_open(0, path, pflags & ~(sftp::SSH_FXF_CREAT | sftp::SSH_FXF_EXCL | sftp::SSH_FXF_TRUNC), {}),
             std::move(reopen_done), channel);
      };
    // What the file looks like right after the open (a STAT in the same round trip): a reconnect
    // compares against it before reopening.
    struct Opening {
      std::mutex mutex;
      FileRef file;
      std::optional<RemoteFile::Seen> seen;
    };
    auto opening = directory ? nullptr : std::make_shared<Opening>();
    Link* link = links[index].get();
    send(index, std::move(packet),
         [done = std::move(done), path, pflags, directory, index, channel, lane, link, opening](Result<Reply> reply) mutable {
           if (!reply) return done(reply.take_error());
           if (auto* handle = std::get_if<sftp::HandleReply>(&reply->body)) {
             auto file = std::make_shared<RemoteFile>(std::move(handle->handle), std::move(path), pflags, directory, index,
                                                      channel, lane);
             if (opening) {
               std::lock_guard<std::mutex> lock(opening->mutex);
               opening->file = file;
               if (opening->seen) file->observed(*opening->seen);
             }
             link->adopt(file);
             return done(std::move(file));
           }
           if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) return done(status_error(*status));
           done(unexpected(*reply, "HANDLE"));
         },
         exclusive ? Replay::recheck : Replay::resend, std::move(recheck), channel);
    if (opening)
      send(index, sftp::build_stat(0, path), expect_attrs([opening](Result<sftp::Attrs> attrs) {
             if (!attrs || !(attrs->flags & sftp::SSH_FILEXFER_ATTR_SIZE)) return;
             RemoteFile::Seen seen{attrs->size, attrs->mtime};
             std::lock_guard<std::mutex> lock(opening->mutex);
             opening->seen = seen;
             if (opening->file && !opening->file->written_since_seen()) opening->file->observed(seen);
           }), Replay::resend, {}, channel);
  }

  void tick() {
    std::unique_lock<std::mutex> lock(ticker_mutex);
    while (!ticker_stop) {
      ticker_wake.wait_for(lock, std::chrono::milliseconds(100));
      auto due = take_timers(Clock::now(), false);
      lock.unlock();
      for (auto& link : links) link->expire_held(Clock::now());
      for (auto& fn : due) fn();
      lock.lock();
    }
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(ticker_mutex);
      ticker_stop = true;
    }
    ticker_wake.notify_all();
    if (ticker.joinable()) ticker.join();
    for (auto& link : links) link->shutdown();
    std::vector<std::function<void()>> due;
    {
      std::lock_guard<std::mutex> lock(ticker_mutex);
      due = take_timers(Clock::now(), true);
    }
    for (auto& fn : due) fn();  // a timer is a promise to call back: kept at shutdown too
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() { impl_->shutdown(); }

Result<std::unique_ptr<Client>> Client::connect(const ssh::SessionOptions& ssh_options, const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->channels = std::max<size_t>(options.connection.channels, 1);
  const size_t count = std::max<size_t>(options.connections, 1);
  for (size_t i = 0; i < count; ++i) {
    auto link = Link::open(i, ssh_options, options.connection, options.link);
    if (!link) return link.take_error();  // the ones already open close with impl
    impl->links.push_back(std::move(*link));
  }
  impl->quirks = std::make_unique<ServerQuirks>(impl->features());
  impl->ticker = std::thread([i = impl.get()] { i->tick(); });
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const ServerFeatures& Client::features() const { return impl_->features(); }
const ssh::SessionInfo& Client::session_info() const { return impl_->links.front()->session_info(); }
size_t Client::connection_count() const { return impl_->links.size(); }
size_t Client::lane_count() const { return impl_->lane_count(); }
std::chrono::microseconds Client::min_rtt(size_t index) const {
  return impl_->links[index % impl_->links.size()]->min_rtt();
}
bool Client::alive() const {
  return std::all_of(impl_->links.begin(), impl_->links.end(), [](const auto& link) { return link->up(); });
}
ClientStatus Client::status() const {
  ClientStatus status;
  for (const auto& link : impl_->links) status.connections.push_back(link->status());
  return status;
}
void Client::shutdown() { impl_->shutdown(); }
void Client::after(std::chrono::milliseconds delay, std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(impl_->ticker_mutex);
    if (!impl_->ticker_stop) {
      impl_->timers.emplace_back(Clock::now() + delay, std::move(fn));
      return;
    }
  }
  fn();
}
void Client::cut_connections() {
  for (auto& link : impl_->links) link->cut();
}

void Client::stat(std::string path, Callback<sftp::Attrs> done) {
  impl_->send(sftp::build_stat(0, path), expect_attrs(std::move(done)));
}
void Client::lstat(std::string path, Callback<sftp::Attrs> done) {
  impl_->send(sftp::build_lstat(0, path), expect_attrs(std::move(done)));
}
void Client::setstat(std::string path, sftp::Attrs attrs, Done done) {
  impl_->send(sftp::build_setstat(0, path, attrs), expect_ok(std::move(done)));
}
void Client::lsetstat(std::string path, sftp::Attrs attrs, Done done) {
  if (impl_->require(sftp::kExtLsetstat, done)) impl_->send(sftp::build_lsetstat(0, path, attrs), expect_ok(std::move(done)));
}
void Client::realpath(std::string path, Callback<std::string> done) {
  impl_->send(sftp::build_realpath(0, path), expect_single_name(std::move(done)));
}
void Client::readlink(std::string path, Callback<std::string> done) {
  impl_->send(sftp::build_readlink(0, path), expect_single_name(std::move(done)));
}
void Client::symlink(std::string target, std::string link_path, Done done) {
  symlink_on(impl_->pick(), std::move(target), std::move(link_path), std::move(done));
}
bool Client::symlink_order_known() const { return impl_->quirks->symlink_order_known(); }
void Client::mkdir(std::string path, sftp::Attrs attrs, Done done) {
  mkdir_on(impl_->pick(), std::move(path), std::move(attrs), std::move(done));
}
void Client::rmdir(std::string path, Done done) {
  const size_t index = impl_->pick();
  impl_->send(index, sftp::build_rmdir(0, path), expect_ok(std::move(done)), Replay::recheck,
              impl_->recheck_by_lstat(index, path, [](const Result<sftp::Attrs>& attrs) {
                return !attrs && attrs.error().kind == Error::Kind::sftp_status && attrs.error().code == sftp::SSH_FX_NO_SUCH_FILE;
              }));
}
void Client::remove(std::string path, Done done) {
  const size_t index = impl_->pick();
  Impl* impl = impl_.get();
  impl_->send(index, sftp::build_remove(0, path),
              expect_ok([impl, path, done = std::move(done)](Status status) {
                // An open file of that name is no longer reachable by its name: a reconnect must not
                // reopen whatever takes the name next.
                if (status)
                  for (auto& file : impl->open_files())
                    if (file->path() == path) file->mark_unlinked();
                done(std::move(status));
              }),
              Replay::recheck, impl_->recheck_by_lstat(index, path, [](const Result<sftp::Attrs>& attrs) {
                return !attrs && attrs.error().kind == Error::Kind::sftp_status && attrs.error().code == sftp::SSH_FX_NO_SUCH_FILE;
              }));
}
void Client::rename(std::string old_path, std::string new_path, Done done, bool plain) {
  auto packet = !plain && features().has(sftp::kExtPosixRename) ? sftp::build_posix_rename(0, old_path, new_path)
                                                                 : sftp::build_rename(0, old_path, new_path);
  const size_t index = impl_->pick();
  Impl* impl = impl_.get();
  // A replayed rename that fails was done by the first send when the old name is gone and the new
  // one is there.
  auto recheck = [impl, index, old_path, new_path](Result<Reply> failed, ReplyCallback done) {
    impl->send_for_recheck(index, sftp::build_lstat(0, old_path), expect_attrs([impl, index, new_path, failed = std::move(failed),
                                                                    done = std::move(done)](Result<sftp::Attrs> old_attrs) mutable {
      if (old_attrs || old_attrs.error().code != sftp::SSH_FX_NO_SUCH_FILE) return done(std::move(failed));
      impl->recheck_by_lstat(index, new_path, [](const Result<sftp::Attrs>& attrs) { return attrs.has_value(); })(
          std::move(failed), std::move(done));
    }));
  };
  impl_->send(index, std::move(packet),
              expect_ok([impl, old_path, new_path, done = std::move(done)](Status status) {
                // Open files keep their reopen paths true (a reconnect reopens by path).
                if (status)
                  for (auto& file : impl->open_files()) {
                    std::string path = file->path();
                    if (path == new_path) file->mark_unlinked();  // replaced
                    if (path_is_within(path, old_path)) file->set_path(new_path + path.substr(old_path.size()));
                  }
                done(std::move(status));
              }),
              Replay::recheck, std::move(recheck));
}
void Client::hardlink(std::string old_path, std::string new_path, Done done) {
  hardlink_on(impl_->pick(), std::move(old_path), std::move(new_path), std::move(done));
}
void Client::statvfs(std::string path, Callback<sftp::Statvfs> done) {
  if (!impl_->require(sftp::kExtStatvfs, done)) return;
  impl_->send(sftp::build_statvfs(0, path), [done = std::move(done)](Result<Reply> reply) {
    if (!reply) return done(reply.take_error());
    if (auto* ext = std::get_if<sftp::ExtendedReply>(&reply->body)) return done(sftp::parse_statvfs(ext->payload));
    if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) return done(status_error(*status));
    done(unexpected(*reply, "EXTENDED_REPLY"));
  });
}
void Client::home_directory(std::string user, Callback<std::string> done) {
  if (features().has(sftp::kExtHomeDirectory))
    impl_->send(sftp::build_home_directory(0, user), expect_single_name(std::move(done)));
  else
    realpath(".", std::move(done));  // the server starts sessions in the home directory
}

size_t Client::pick_connection() { return impl_->pick(); }
void Client::stat_on(size_t connection, std::string path, Callback<sftp::Attrs> done) {
  impl_->send(connection, sftp::build_stat(0, path), expect_attrs(std::move(done)));
}
void Client::lstat_on(size_t connection, std::string path, Callback<sftp::Attrs> done) {
  impl_->send(connection, sftp::build_lstat(0, path), expect_attrs(std::move(done)));
}
void Client::mkdir_on(size_t connection, std::string path, sftp::Attrs attrs, Done done) {
  impl_->send(connection, sftp::build_mkdir(0, path, attrs), expect_ok(std::move(done)), Replay::recheck,
              impl_->recheck_by_lstat(connection, path, [](const Result<sftp::Attrs>& attrs) {
                return attrs && (attrs->flags & sftp::SSH_FILEXFER_ATTR_PERMISSIONS) && S_ISDIR(attrs->permissions);
              }));
}
void Client::setstat_on(size_t connection, std::string path, sftp::Attrs attrs, Done done) {
  impl_->send(connection, sftp::build_setstat(0, path, attrs), expect_ok(std::move(done)));
}
void Client::lsetstat_on(size_t connection, std::string path, sftp::Attrs attrs, Done done) {
  if (impl_->require(sftp::kExtLsetstat, done))
    impl_->send(connection, sftp::build_lsetstat(0, path, attrs), expect_ok(std::move(done)));
}
void Client::symlink_on(size_t connection, std::string target, std::string link_path, Done done) {
  Impl* impl = impl_.get();
  // A replayed SYMLINK that fails was done by the first send when the name now holds our link.
  auto send = [impl, connection, target, link_path](sftp::Bytes packet, ReplyCallback reply) {
    const bool is_symlink = packet.size() > 4 && packet[4] == sftp::SSH_FXP_SYMLINK;
    if (!is_symlink) return impl->send(connection, std::move(packet), std::move(reply));
    auto recheck = [impl, connection, target, link_path](Result<Reply> failed, ReplyCallback done) {
      impl->send_for_recheck(connection, sftp::build_readlink(0, link_path),
                 expect_single_name([failed = std::move(failed), done = std::move(done), target](Result<std::string> now) mutable {
                   if (now && *now == target) return done(ok_reply());
                   done(std::move(failed));
                 }));
    };
    impl->send(connection, std::move(packet), std::move(reply), Replay::recheck, std::move(recheck));
  };
  impl_->quirks->symlink(send, std::move(target), std::move(link_path), std::move(done));
}
void Client::hardlink_on(size_t connection, std::string old_path, std::string new_path, Done done) {
  if (impl_->require(sftp::kExtHardlink, done))
    impl_->send(connection, sftp::build_hardlink(0, old_path, new_path), expect_ok(std::move(done)), Replay::recheck,
                impl_->recheck_by_lstat(connection, new_path, [](const Result<sftp::Attrs>& attrs) { return attrs.has_value(); }));
}

void Client::open(std::string path, uint32_t pflags, sftp::Attrs attrs, Callback<FileRef> done) {
  impl_->open_on(impl_->pick(), std::move(path), pflags, std::move(attrs), false, std::move(done));
}
void Client::open_on(size_t connection, std::string path, uint32_t pflags, sftp::Attrs attrs, Callback<FileRef> done) {
  impl_->open_on(connection, std::move(path), pflags, std::move(attrs), false, std::move(done));
}
void Client::opendir(std::string path, Callback<FileRef> done) {
  impl_->open_on(impl_->pick(), std::move(path), 0, {}, true, std::move(done));
}
void Client::close(const FileRef& file, Done done) {
  file->mark_closing();
  // A lost file has no handle left on the server: nothing to close.
  if (file->lost()) return done({});
  Request request;
  request.file = file;
  request.is_close = true;
  request.channel = file->channel;
  request.build = [file]() -> Result<sftp::Bytes> { return sftp::build_close(0, file->handle()); };
  request.done = expect_ok([done = std::move(done)](Status status) { done(std::move(status)); });
  impl_->at(file->connection).send(std::move(request));
}
void Client::fstat(const FileRef& file, Callback<sftp::Attrs> done) {
  impl_->send_on(file, [](const std::string& h) { return sftp::build_fstat(0, h); }, expect_attrs(std::move(done)));
}
void Client::fsetstat(const FileRef& file, sftp::Attrs attrs, Done done) {
  impl_->send_on(file, [attrs](const std::string& h) { return sftp::build_fsetstat(0, h, attrs); }, expect_ok(std::move(done)));
}
void Client::fsync(const FileRef& file, Done done) {
  if (impl_->require(sftp::kExtFsync, done))
    impl_->send_on(file, [](const std::string& h) { return sftp::build_fsync(0, h); }, expect_ok(std::move(done)));
}

void Client::readdir(const FileRef& dir, Callback<std::vector<sftp::NameEntry>> done) {
  // The server's position in a listing dies with the connection: a listing cut in the middle cannot
  // go on (it would start over and show names twice).
  if (dir->reopened() && dir->listing_started())
    return done(Error::unreachable_error("the connection dropped while listing " + dir->path() + "; list it again"));
  dir->note_listing_started();
  impl_->send_on(dir, [](const std::string& h) { return sftp::build_readdir(0, h); },
                 [done = std::move(done)](Result<Reply> reply) {
    if (!reply) return done(reply.take_error());
    if (auto* name = std::get_if<sftp::NameReply>(&reply->body)) {
      // An empty NAME would make a caller loop forever; the protocol ends a listing with EOF.
      if (name->names.empty()) return done(Error::protocol_error("the server sent an empty directory page"));
      return done(std::move(name->names));
    }
    if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) {
      if (status->code == sftp::SSH_FX_EOF) return done(std::vector<sftp::NameEntry>{});
      return done(status_error(*status));
    }
    done(unexpected(*reply, "NAME"));
  }, Replay::never);
}

namespace {

// READ pieces this large are received in place (Sink); smaller ones through the connection's buffer.
constexpr uint32_t kReceiveInPlaceBytes = 32 * 1024;

// One logical read split into pipelined READs. A short reply is not end of file (OpenSSH clamps large
// reads, rclone answers 32 KiB at most): the rest of that piece is asked for again. Only SSH_FX_EOF ends
// the file; the result is the contiguous bytes from the start up to the first end of file.
struct ReadJob : std::enable_shared_from_this<ReadJob> {
  Client::Impl* client = nullptr;
  FileRef file;
  uint64_t offset = 0;
  sftp::Bytes buffer;
  uint64_t eof_at = UINT64_MAX;  // relative to offset
  std::mutex mutex;
  size_t pieces_left = 0;
  std::optional<Error> error;
  Callback<sftp::Bytes> done;

  void request(uint64_t relative, uint32_t length) {
    auto self = shared_from_this();
    const uint64_t at = offset + relative;
    // Large pieces are received straight into the buffer; a small one is not worth the connection's
    // extra read for its header.
    Sink sink;
    if (length >= kReceiveInPlaceBytes) sink = Sink{buffer.data() + relative, length, self};
    client->send_on(file, [at, length](const std::string& handle) { return sftp::build_read(0, handle, at, length); },
                    [self, relative, length](Result<Reply> reply) { self->on_reply(relative, length, std::move(reply)); },
                    Replay::resend, {}, {}, std::move(sink));
  }

  void on_reply(uint64_t relative, uint32_t length, Result<Reply> reply) {
    std::optional<std::pair<uint64_t, uint32_t>> rest;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!reply) {
        if (!error) error = reply.take_error();
      } else if (auto* data = std::get_if<sftp::DataReply>(&reply->body)) {
        if (data->data.size() > length) {
          if (!error) error = Error::protocol_error("the server sent more data than was asked for");
        } else if (data->data.empty()) {
          if (!error) error = Error::protocol_error("the server sent an empty DATA reply");
        } else {
          // Received in place (the sink), or still to be copied from the connection's buffer.
          if (data->data.data() != buffer.data() + relative)
            std::copy(data->data.begin(), data->data.end(), buffer.begin() + static_cast<ptrdiff_t>(relative));
          if (data->data.size() < length)
            rest = {relative + data->data.size(), static_cast<uint32_t>(length - data->data.size())};
        }
      } else if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) {
        if (status->code == sftp::SSH_FX_EOF) eof_at = std::min(eof_at, relative);
        else if (!error) error = status_error(*status);
      } else if (!error) {
        error = unexpected(*reply, "DATA");
      }
      if (!rest) --pieces_left;
      if (rest && (error || rest->first >= eof_at)) {
        rest.reset();
        --pieces_left;
      }
      if (pieces_left > 0 && !rest) return;
    }
    if (rest) return request(rest->first, rest->second);
    finish();
  }

  void finish() {
    if (error) return done(std::move(*error));
    if (eof_at < buffer.size()) buffer.resize(eof_at);
    done(std::move(buffer));
  }
};

// One logical write split into pipelined WRITEs; done once every piece is acknowledged.
struct WriteJob {
  std::mutex mutex;
  size_t pieces_left = 0;
  std::optional<Error> error;
  Done done;

  void on_reply(Status status) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!status && !error) error = status.take_error();
      if (--pieces_left > 0) return;
    }
    if (error) done(std::move(*error));
    else done({});
  }
};

}  // namespace

void Client::read(const FileRef& file, uint64_t offset, uint32_t length, Callback<sftp::Bytes> done) {
  if (length == 0) return done(sftp::Bytes{});
  const uint32_t piece = features().max_read;
  auto job = std::make_shared<ReadJob>();
  job->client = impl_.get();
  job->file = file;
  job->offset = offset;
  job->buffer.resize(length);
  job->done = std::move(done);
  job->pieces_left = (length + piece - 1) / piece;
  for (uint64_t relative = 0; relative < length; relative += piece)
    job->request(relative, static_cast<uint32_t>(std::min<uint64_t>(piece, length - relative)));
}

void Client::write(const FileRef& file, uint64_t offset, sftp::Bytes data, Done done) {
  if (data.empty()) return done({});
  file->note_write();
  const size_t piece = features().max_write;
  auto job = std::make_shared<WriteJob>();
  job->done = std::move(done);
  job->pieces_left = (data.size() + piece - 1) / piece;
  // The bytes stay here until every piece is acknowledged: a piece in flight at a drop is sent again.
  // Each piece's data goes out from here behind its header (no copy into a packet).
  auto bytes = std::make_shared<const sftp::Bytes>(std::move(data));
  for (size_t pos = 0; pos < bytes->size(); pos += piece) {
    size_t length = std::min(piece, bytes->size() - pos);
    impl_->send_on(file,
                   [length, at = offset + pos](const std::string& handle) {
                     return sftp::build_write_header(0, handle, at, static_cast<uint32_t>(length));
                   },
                   expect_ok([job](Status st) { job->on_reply(std::move(st)); }), Replay::resend, {},
                   Payload{bytes, pos, length});
  }
}

void Client::copy_data(const FileRef& from, uint64_t from_offset, uint64_t length, const FileRef& to,
                       uint64_t to_offset, Done done) {
  if (!impl_->require(sftp::kExtCopyData, done)) return;
  if (from->lane != to->lane)
    return done(Error::not_supported("copy-data needs both handles on one connection and channel"));
  to->note_write();
  // A server-side copy of a large file legitimately takes long: no per-request deadline beyond the
  // connection's liveness checks.
  impl_->send_on(from,
                 [to, from_offset, length, to_offset](const std::string& from_handle) {
                   return sftp::build_copy_data(0, from_handle, from_offset, length, to->handle(), to_offset);
                 },
                 expect_ok(std::move(done)), Replay::resend, Clock::now() + std::chrono::hours(24));
}

void Client::submit(size_t index, sftp::Bytes packet, ReplyCallback done) {
  impl_->send(index, std::move(packet), std::move(done));
}

}  // namespace sftpfs::client
