// What a server does differently from OpenSSH that only its replies show, learned once per session and
// shared by every connection (they all reach the same server program).
//
// SYMLINK's argument order: OpenSSH sends and expects (targetpath, linkpath), the draft (and
// gesftpserver, which says so in symlink-order@rjk.greenend.org.uk) the reverse, and asyncssh picks one
// from the client's version string. A reversed SYMLINK "succeeds" and makes a link at the wrong name.
// So until the order is known, a SYMLINK goes out with a READLINK of the new name right behind it (same
// connection, same round trip): a link there means the order is right; nothing there means the server
// made it the other way round: that link is removed (only after READLINK shows it points at our name),
// the order is swapped and remembered, and the link is made again. A failed SYMLINK with nothing at the
// name is tried once in the other order (a reversed SYMLINK fails when the target's name exists).
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "client/connection.hpp"

namespace sftpfs::client {

enum class SymlinkOrder : int { unknown = 0, target_first = 1, link_first = 2 };

class ServerQuirks {
 public:
  // From the VERSION extensions: symlink-order@rjk.greenend.org.uk settles the order at once.
  explicit ServerQuirks(const ServerFeatures& features);

  SymlinkOrder symlink_order() const { return static_cast<SymlinkOrder>(symlink_order_.load()); }
  bool symlink_order_known() const { return symlink_order() != SymlinkOrder::unknown; }

  // Every request of one call goes through `send` (one connection: answered in order).
  using Send = std::function<void(sftp::Bytes packet, ReplyCallback done)>;
  // Makes link_path -> target; done(OK) only when the link is at link_path.
  void symlink(const Send& send, std::string target, std::string link_path, std::function<void(Status)> done);

 private:
  void learn(SymlinkOrder order);
  void try_order(Send send, std::string target, std::string link_path, SymlinkOrder order, bool first_try,
                 std::function<void(Status)> done);
  void undo_reversed(Send send, std::string target, std::string link_path, std::function<void(bool removed)> done);

  std::atomic<int> symlink_order_{0};
};

// proftpd's mod_sftp (banner "SSH-2.0-mod_sftp") answers READLINK with an absolute path inside its
// chroot, whatever the link holds (`/dir/tgt` for a link made as `tgt`): such targets resolve through
// the mount only when shown relative, so transform_symlinks is on by default for it.
bool server_makes_symlink_targets_absolute(const std::string& remote_banner);

}  // namespace sftpfs::client
