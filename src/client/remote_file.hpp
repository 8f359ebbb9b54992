// An open remote file or directory, as the client hands it to the filesystem. Its server handle
// changes when a reconnect reopens it, so the handle and path are read through methods; the record
// also keeps what the reopen checks (size and mtime last seen, whether writes went out since).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace sftpfs::client {

class RemoteFile {
  // Defined first: the accessors below deduce their types from it.
  template <class F>
  auto locked(F&& f) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return f();
  }

 public:
  RemoteFile(std::string handle, std::string path, uint32_t pflags, bool is_directory, size_t connection,
             size_t channel = 0, size_t lane = SIZE_MAX)
      : pflags(pflags), is_directory(is_directory), connection(connection), channel(channel),
        lane(lane == SIZE_MAX ? connection : lane), handle_(std::move(handle)), path_(path), opened_as_(std::move(path)) {}

  const uint32_t pflags;     // SSH_FXF_* it was opened with (0 for a directory)
  const bool is_directory;
  const size_t connection;   // index of the link it lives on
  const size_t channel;      // the SFTP channel of that link's connection its handle belongs to
  // Link and channel as one number (Client::lane_count): the unit the server orders requests in.
  // Channel 0 of link i is lane i.
  const size_t lane;

  std::string handle() const { return locked([&] { return handle_; }); }
  std::string path() const { return locked([&] { return path_; }); }  // now (renames followed)
  // The name the server's handle was opened by: OpenSSH's copy-data refuses two handles opened by
  // one name, whatever they are called now.
  std::string opened_as() const { return locked([&] { return opened_as_; }); }
  // Set when a reconnect could not reopen it safely: every later request on it fails with this.
  std::optional<std::string> lost() const { return locked([&] { return lost_; }); }

  // What the file looked like when last seen whole (at open, or an FSTAT), and whether this client
  // wrote to it since: a reopen compares, and a file that changed under us is not written blindly.
  struct Seen {
    uint64_t size = 0;
    uint32_t mtime = 0;
  };
  void observed(Seen seen) {
    locked([&] {
      seen_ = seen;
      written_since_seen_ = false;
    });
  }
  void note_write() { locked([&] { written_since_seen_ = true; }); }
  void note_listing_started() { locked([&] { listing_started_ = true; }); }
  bool listing_started() const { return locked([&] { return listing_started_; }); }

  // ---- for the client's reconnect and namespace bookkeeping ----
  std::optional<Seen> seen() const { return locked([&] { return seen_; }); }
  bool written_since_seen() const { return locked([&] { return written_since_seen_; }); }
  bool unlinked() const { return locked([&] { return unlinked_; }); }
  bool reopened() const { return locked([&] { return reopened_; }); }
  void replace_handle(std::string handle) {
    locked([&] {
      handle_ = std::move(handle);
      opened_as_ = path_;
      reopened_ = true;
    });
  }
  void mark_lost(std::string why) { locked([&] { if (!lost_) lost_ = std::move(why); }); }
  void set_path(std::string path) { locked([&] { path_ = std::move(path); }); }
  void mark_unlinked() { locked([&] { unlinked_ = true; }); }
  void mark_closing() { locked([&] { closing_ = true; }); }
  bool closing() const { return locked([&] { return closing_; }); }

 private:
  mutable std::mutex mutex_;
  std::string handle_;
  std::string path_;
  std::string opened_as_;
  std::optional<std::string> lost_;
  std::optional<Seen> seen_;
  bool written_since_seen_ = false;
  bool listing_started_ = false;
  bool unlinked_ = false;
  bool reopened_ = false;
  bool closing_ = false;  // CLOSE sent: a reconnect does not reopen it
};
using FileRef = std::shared_ptr<RemoteFile>;

}  // namespace sftpfs::client
