// The asynchronous SFTP client the filesystem uses: typed operations over a pool of Links (each a
// Connection that is replaced when it drops; open files are reopened and requests replayed, so the
// filesystem sees handles that survive).
// Every operation takes a completion callback that runs exactly once, on a connection's I/O thread;
// callbacks must not block. Paths are absolute remote paths.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "client/client_status.hpp"
#include "client/connection.hpp"
#include "client/link.hpp"
#include "client/remote_file.hpp"
#include "sftp/protocol.hpp"

namespace sftpfs::client {

template <class T>
using Callback = std::function<void(Result<T>)>;
using Done = std::function<void(Status)>;

struct ClientOptions {
  ConnectionOptions connection;
  size_t connections = 1;  // max_conns
  LinkOptions link;        // reconnect, reconnect_wait, reconnect_max_delay
};

class Client {
 public:
  // Opens options.connections connections. The first failure is returned and nothing is left open.
  static Result<std::unique_ptr<Client>> connect(const ssh::SessionOptions& ssh_options,
                                                 const ClientOptions& options);
  ~Client();

  const ServerFeatures& features() const;  // of connection 0; all connections go to the same server
  const ssh::SessionInfo& session_info() const;
  size_t connection_count() const;
  // Lanes: every (connection, SFTP channel) pair, each with its own handles and flow-control window.
  // Lanes 0 .. connection_count()-1 are the connections' first channels; the rest open on first use.
  size_t lane_count() const;
  // Connection `index`'s shortest round trip of small requests so far (0 until measured): the path's
  // latency, without the queueing a busy server adds.
  std::chrono::microseconds min_rtt(size_t index) const;
  bool alive() const;  // every connection up
  ClientStatus status() const;
  // Stops reconnecting and closes every connection: requests waiting fail at once. Idempotent; the
  // destructor calls it. Prompt in every state (an attempt in progress is abandoned).
  void shutdown();
  // Calls fn on the client's ticker thread after about `delay` (100 ms granularity), or at once after
  // shutdown; fn must not block. For answers that must not wait on a silent link.
  void after(std::chrono::milliseconds delay, std::function<void()> fn);
  // Cuts every connection's TCP socket as a network drop would (tests).
  void cut_connections();

  // ---- by path ----
  void stat(std::string path, Callback<sftp::Attrs> done);
  void lstat(std::string path, Callback<sftp::Attrs> done);
  void setstat(std::string path, sftp::Attrs attrs, Done done);
  // lsetstat@openssh.com; Error::Kind::unsupported when the server lacks it
  void lsetstat(std::string path, sftp::Attrs attrs, Done done);
  void realpath(std::string path, Callback<std::string> done);
  void readlink(std::string path, Callback<std::string> done);
  // Argument order as the server takes it (server_quirks.hpp: learned at the first SYMLINK, which
  // then costs more round trips); done(OK) only when the link is at link_path.
  void symlink(std::string target, std::string link_path, Done done);
  bool symlink_order_known() const;
  void mkdir(std::string path, sftp::Attrs attrs, Done done);
  void rmdir(std::string path, Done done);
  void remove(std::string path, Done done);
  // posix-rename@openssh.com when offered (atomic replace); else plain RENAME, which most servers
  // refuse when new_path exists. `plain`: plain RENAME even when posix-rename is offered.
  void rename(std::string old_path, std::string new_path, Done done, bool plain = false);
  void hardlink(std::string old_path, std::string new_path, Done done);  // unsupported when absent
  void statvfs(std::string path, Callback<sftp::Statvfs> done);          // unsupported when absent
  void home_directory(std::string user, Callback<std::string> done);

  // ---- pinned to one connection ----
  // A server answers one connection's requests in order, so a create and the LSTAT that reads its
  // result can be sent back to back (one round trip) when both go to the same connection: pick it
  // once (the least busy, as metadata requests do), then use the *_on forms and open_on.
  size_t pick_connection();
  void stat_on(size_t connection, std::string path, Callback<sftp::Attrs> done);
  void lstat_on(size_t connection, std::string path, Callback<sftp::Attrs> done);
  void mkdir_on(size_t connection, std::string path, sftp::Attrs attrs, Done done);
  void setstat_on(size_t connection, std::string path, sftp::Attrs attrs, Done done);
  void lsetstat_on(size_t connection, std::string path, sftp::Attrs attrs, Done done);  // unsupported when absent
  void symlink_on(size_t connection, std::string target, std::string link_path, Done done);
  void hardlink_on(size_t connection, std::string old_path, std::string new_path, Done done);  // unsupported when absent

  // ---- open files and directories ----
  void open(std::string path, uint32_t pflags, sftp::Attrs attrs, Callback<FileRef> done);
  // The same on a chosen lane (modulo lane_count(); a lane below connection_count() is that
  // connection): for striping one transfer. The file's requests then all go on that lane.
  void open_on(size_t lane, std::string path, uint32_t pflags, sftp::Attrs attrs, Callback<FileRef> done);
  void opendir(std::string path, Callback<FileRef> done);
  void close(const FileRef& file, Done done);
  void fstat(const FileRef& file, Callback<sftp::Attrs> done);
  void fsetstat(const FileRef& file, sftp::Attrs attrs, Done done);
  void fsync(const FileRef& file, Done done);  // unsupported when absent
  // One READDIR: some entries, or an empty vector at the end of the directory.
  void readdir(const FileRef& dir, Callback<std::vector<sftp::NameEntry>> done);
  // Reads up to `length` bytes at `offset`. Short server replies are re-requested, and large reads are
  // split into pipelined requests, so fewer bytes than asked come back only at end of file.
  void read(const FileRef& file, uint64_t offset, uint32_t length, Callback<sftp::Bytes> done);
  // Writes all of `data` at `offset` (split into pipelined requests of max_write).
  void write(const FileRef& file, uint64_t offset, sftp::Bytes data, Done done);
  // copy-data: server-side copy; unsupported when absent. length 0 = to end of file.
  void copy_data(const FileRef& from, uint64_t from_offset, uint64_t length, const FileRef& to,
                 uint64_t to_offset, Done done);

  // Sends a raw request on connection `index` (for --probe and tests).
  void submit(size_t index, sftp::Bytes packet, ReplyCallback done);

  struct Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Runs an asynchronous operation and waits for its result: for the CLI and tests, never the filesystem.
// Example: auto attrs = wait_for<sftp::Attrs>([&](auto cb) { client.stat("/etc", cb); });
template <class T, class Start>
Result<T> wait_for(Start&& start);

}  // namespace sftpfs::client

#include "client/wait.inl"
