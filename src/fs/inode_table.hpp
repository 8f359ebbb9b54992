// The inode table: our inode numbers <-> (parent inode, name), from which remote paths are derived.
//
// SFTP has no inode numbers, so identity is the path: one node per name in the tree. A node's number
// never changes for the life of the mount and is never reused; a rename moves the node (with its whole
// subtree, since children hold their parent's number, not a path). A node lives while the kernel holds a
// lookup reference to it (lookup counts, forget), while a file handle is open on it, or while it has
// children; an unlinked or replaced node is "detached": it has no path any more but keeps serving its
// open handles until the last reference goes.
//
// Locking: one mutex guards the whole table. It is a leaf lock: no other lock is taken while it is
// held, and it is never held across a client call or a reply to the kernel.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sftpfs::fs {

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;  // FUSE_ROOT_ID

class InodeTable {
 public:
  explicit InodeTable(std::string remote_root);

  // The node for parent/name, created if absent, with `lookups` added to its lookup count (one per
  // entry replied to the kernel). `type` (S_IFMT bits, 0 = unknown) is remembered when given.
  // Returns nullopt when the parent is unknown or detached.
  std::optional<Ino> link(Ino parent, std::string_view name, uint64_t lookups, mode_t type = 0);
  std::optional<Ino> find(Ino parent, std::string_view name) const;

  // The kernel dropped `count` lookups. The node goes when nothing references it.
  void forget(Ino ino, uint64_t count);

  // Open handles pin a node (an unlinked open file keeps working).
  void open_ref(Ino ino);
  void close_ref(Ino ino);

  // Remote path of a node; nullopt when unknown or detached. The root's path is the remote root.
  std::optional<std::string> path(Ino ino) const;
  // Remote path of parent/name; nullopt when the parent has no path.
  std::optional<std::string> child_path(Ino parent, std::string_view name) const;
  std::optional<Ino> parent_of(Ino ino) const;

  // A hard link made through this mount: parent/name is one more name of `ino` (one node, one inode
  // number, one link count). False when the parent is unknown or detached, or the node is unknown.
  bool add_name(Ino ino, Ino parent, std::string_view name);
  // The name was removed on the server: the node (if any) loses it, and its link count drops by one.
  // A node left without names is detached (its link count shows 0). Returns the node.
  std::optional<Ino> unlink(Ino parent, std::string_view name);
  // The server renamed old_parent/old_name to new_parent/new_name: the name moves; the node that had
  // the target name loses it, as in unlink (returned). Two names of one node: nothing happens (POSIX).
  std::optional<Ino> rename(Ino old_parent, std::string_view old_name, Ino new_parent, std::string_view new_name);
  // Paths of every name the node has (its path first); empty when detached.
  std::vector<std::string> paths(Ino ino) const;

  // Link count learned from the server (READDIR longname); 0 = unknown.
  void set_nlink(Ino ino, uint32_t nlink);
  uint32_t nlink(Ino ino) const;
  // Every name of the node was removed through this mount (an open file unlinked): it shows 0 links.
  bool unlinked(Ino ino) const;
  // Records a regular file's size and mtime as seen in attributes; true when they differ from the
  // ones seen before (the file's bytes may have changed: cached data is stale).
  bool note_data_signature(Ino ino, uint64_t size, uint32_t mtime);
  // The access and modification times last seen in attributes (for a utimens that sets only one of
  // them: SFTP v3 sets both at once).
  void note_times(Ino ino, uint32_t atime, uint32_t mtime);
  std::optional<std::pair<uint32_t, uint32_t>> last_times(Ino ino) const;
  mode_t type(Ino ino) const;  // S_IFMT bits, 0 = unknown
  void set_type(Ino ino, mode_t type);

  // For tests and diagnostics.
  bool contains(Ino ino) const;
  uint64_t lookup_count(Ino ino) const;
  bool detached(Ino ino) const;
  size_t size() const;

  static std::string join(std::string_view dir, std::string_view name);

 private:
  struct Node {
    Ino parent = 0;
    std::string name;
    std::vector<std::pair<Ino, std::string>> other_names;  // hard links made through this mount
    bool unlinked = false;
    uint64_t lookups = 0;
    uint32_t opens = 0;
    uint32_t nlink = 0;
    mode_t type = 0;
    bool has_signature = false;
    bool has_times = false;
    uint32_t last_atime = 0, last_mtime = 0;
    uint32_t mtime = 0;
    uint64_t size = 0;
    bool detached = false;
    std::unordered_map<std::string, Ino> children;
  };

  std::optional<std::string> path_locked(Ino ino) const;
  void detach_locked(Ino ino);
  // Takes parent/name away from `ino` (detaching it when it was its last name); drops the link count.
  // `erase_parent`: the parent may go too when nothing else keeps it (not while a rename still needs it).
  void remove_name_locked(Ino ino, Ino parent, const std::string& name, bool erase_parent = true);
  // Erases the node if nothing references it any more, then looks at its parent the same way.
  void maybe_erase_locked(Ino ino);

  const std::string remote_root_;
  mutable std::mutex mutex_;  // guards everything below; leaf lock (see above)
  std::unordered_map<Ino, Node> nodes_;
  Ino next_ino_ = kRootIno + 1;
};

}  // namespace sftpfs::fs
