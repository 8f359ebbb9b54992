#include "client/client.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>

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

}  // namespace

struct Client::Impl {
  // Before the connections: destroyed after them, whose last callbacks may still use it.
  std::unique_ptr<ServerQuirks> quirks;  // what the server does differently, learned as we go
  std::vector<std::unique_ptr<Connection>> connections;
  std::atomic<size_t> round_robin{0};

  // Metadata goes to the least busy connection, so a large transfer on one does not stall `ls`.
  size_t pick() {
    size_t start = round_robin.fetch_add(1) % connections.size();
    size_t best = start;
    for (size_t i = 0; i < connections.size(); ++i) {
      size_t index = (start + i) % connections.size();
      if (!connections[index]->alive()) continue;
      if (!connections[best]->alive() || connections[index]->outstanding() < connections[best]->outstanding()) best = index;
    }
    return best;
  }

  Connection& at(size_t index) { return *connections[index % connections.size()]; }
  const ServerFeatures& features() const { return connections.front()->features(); }

  void send(size_t index, sftp::Bytes packet, ReplyCallback done) { at(index).submit(std::move(packet), std::move(done)); }
  void send(sftp::Bytes packet, ReplyCallback done) { send(pick(), std::move(packet), std::move(done)); }
  void send_on(const FileRef& file, sftp::Bytes packet, ReplyCallback done) {
    send(file->connection, std::move(packet), std::move(done));
  }

  bool require(std::string_view extension, const std::function<void(Error)>& fail) {
    if (features().has(extension)) return true;
    fail(Error::not_supported("the server does not offer " + std::string(extension)));
    return false;
  }

  void open_on(size_t index, std::string path, uint32_t pflags, sftp::Attrs attrs, bool directory,
               Callback<FileRef> done) {
    auto packet = directory ? sftp::build_opendir(0, path) : sftp::build_open(0, path, pflags, attrs);
    send(index, std::move(packet),
         [done = std::move(done), path, pflags, directory, index](Result<Reply> reply) mutable {
           if (!reply) return done(reply.take_error());
           if (auto* handle = std::get_if<sftp::HandleReply>(&reply->body)) {
             auto file = std::make_shared<RemoteFile>();
             file->handle = std::move(handle->handle);
             file->path = std::move(path);
             file->pflags = pflags;
             file->is_directory = directory;
             file->connection = index;
             return done(std::move(file));
           }
           if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) return done(status_error(*status));
           done(unexpected(*reply, "HANDLE"));
         });
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::connect(const ssh::SessionOptions& ssh_options, const ClientOptions& options) {
  auto impl = std::make_unique<Impl>();
  const size_t count = std::max<size_t>(options.connections, 1);
  for (size_t i = 0; i < count; ++i) {
    auto connection = Connection::open(ssh_options, options.connection);
    if (!connection) return connection.take_error();  // the ones already open close with impl
    impl->connections.push_back(std::move(*connection));
  }
  impl->quirks = std::make_unique<ServerQuirks>(impl->features());
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const ServerFeatures& Client::features() const { return impl_->features(); }
const ssh::SessionInfo& Client::session_info() const { return impl_->connections.front()->session_info(); }
size_t Client::connection_count() const { return impl_->connections.size(); }
bool Client::alive() const {
  return std::all_of(impl_->connections.begin(), impl_->connections.end(), [](const auto& c) { return c->alive(); });
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
  impl_->send(sftp::build_mkdir(0, path, attrs), expect_ok(std::move(done)));
}
void Client::rmdir(std::string path, Done done) { impl_->send(sftp::build_rmdir(0, path), expect_ok(std::move(done))); }
void Client::remove(std::string path, Done done) { impl_->send(sftp::build_remove(0, path), expect_ok(std::move(done))); }
void Client::rename(std::string old_path, std::string new_path, Done done) {
  auto packet = features().has(sftp::kExtPosixRename) ? sftp::build_posix_rename(0, old_path, new_path)
                                                      : sftp::build_rename(0, old_path, new_path);
  impl_->send(std::move(packet), expect_ok(std::move(done)));
}
void Client::hardlink(std::string old_path, std::string new_path, Done done) {
  if (impl_->require(sftp::kExtHardlink, done))
    impl_->send(sftp::build_hardlink(0, old_path, new_path), expect_ok(std::move(done)));
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
  impl_->send(connection, sftp::build_mkdir(0, path, attrs), expect_ok(std::move(done)));
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
  auto send = [impl, connection](sftp::Bytes packet, ReplyCallback reply) {
    impl->send(connection, std::move(packet), std::move(reply));
  };
  impl_->quirks->symlink(send, std::move(target), std::move(link_path), std::move(done));
}
void Client::hardlink_on(size_t connection, std::string old_path, std::string new_path, Done done) {
  if (impl_->require(sftp::kExtHardlink, done))
    impl_->send(connection, sftp::build_hardlink(0, old_path, new_path), expect_ok(std::move(done)));
}

void Client::open(std::string path, uint32_t pflags, sftp::Attrs attrs, Callback<FileRef> done) {
  impl_->open_on(impl_->pick(), std::move(path), pflags, std::move(attrs), false, std::move(done));
}
void Client::open_on(size_t connection, std::string path, uint32_t pflags, sftp::Attrs attrs, Callback<FileRef> done) {
  impl_->open_on(connection % impl_->connections.size(), std::move(path), pflags, std::move(attrs), false,
                 std::move(done));
}
void Client::opendir(std::string path, Callback<FileRef> done) {
  impl_->open_on(impl_->pick(), std::move(path), 0, {}, true, std::move(done));
}
void Client::close(const FileRef& file, Done done) {
  impl_->send_on(file, sftp::build_close(0, file->handle), expect_ok(std::move(done)));
}
void Client::fstat(const FileRef& file, Callback<sftp::Attrs> done) {
  impl_->send_on(file, sftp::build_fstat(0, file->handle), expect_attrs(std::move(done)));
}
void Client::fsetstat(const FileRef& file, sftp::Attrs attrs, Done done) {
  impl_->send_on(file, sftp::build_fsetstat(0, file->handle, attrs), expect_ok(std::move(done)));
}
void Client::fsync(const FileRef& file, Done done) {
  if (impl_->require(sftp::kExtFsync, done)) impl_->send_on(file, sftp::build_fsync(0, file->handle), expect_ok(std::move(done)));
}

void Client::readdir(const FileRef& dir, Callback<std::vector<sftp::NameEntry>> done) {
  impl_->send_on(dir, sftp::build_readdir(0, dir->handle), [done = std::move(done)](Result<Reply> reply) {
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
  });
}

namespace {

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
    client->send_on(file, sftp::build_read(0, file->handle, offset + relative, length),
                    [self, relative, length](Result<Reply> reply) { self->on_reply(relative, length, std::move(reply)); });
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
  const size_t piece = features().max_write;
  auto job = std::make_shared<WriteJob>();
  job->done = std::move(done);
  job->pieces_left = (data.size() + piece - 1) / piece;
  for (size_t pos = 0; pos < data.size(); pos += piece) {
    size_t length = std::min(piece, data.size() - pos);
    auto packet = sftp::build_write(0, file->handle, offset + pos, sftp::ByteView(data.data() + pos, length));
    impl_->send_on(file, std::move(packet), expect_ok([job](Status st) { job->on_reply(std::move(st)); }));
  }
}

void Client::copy_data(const FileRef& from, uint64_t from_offset, uint64_t length, const FileRef& to,
                       uint64_t to_offset, Done done) {
  if (!impl_->require(sftp::kExtCopyData, done)) return;
  if (from->connection != to->connection)
    return done(Error::not_supported("copy-data needs both handles on one connection"));
  // A server-side copy of a large file legitimately takes long: no per-request deadline beyond the
  // connection's liveness checks.
  impl_->at(from->connection)
      .submit(sftp::build_copy_data(0, from->handle, from_offset, length, to->handle, to_offset),
              expect_ok(std::move(done)), Clock::now() + std::chrono::hours(24));
}

void Client::submit(size_t index, sftp::Bytes packet, ReplyCallback done) {
  impl_->send(index % impl_->connections.size(), std::move(packet), std::move(done));
}

}  // namespace sftpfs::client
