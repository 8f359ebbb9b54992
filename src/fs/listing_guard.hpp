// What a server's directory listing may bring, checked as READDIR replies arrive: nothing from the
// network is trusted. A name with '/' or a NUL, an empty one, "." and ".." are never entries (they would
// name something outside the directory, or nothing); a name seen before in the same listing is shown
// once; a listing whose replies bring no new name (a server that starts over at every READDIR) or more
// than kMaxListingEntries names (one that never says EOF) fails with a protocol error instead of
// reading forever. Pure code: unit-tested in tests/unit/fs/listing_guard_test.cpp.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "sftp/protocol.hpp"
#include "util/result.hpp"

namespace sftpfs::fs {

// About 200 MB of listing held in memory before it is refused (a name, its attributes, the kernel's
// copy). Far beyond any directory people list over SFTP, small enough not to take the machine down.
inline constexpr size_t kMaxListingEntries = 1'000'000;

// A name a listing may show: not empty, no '/', no NUL, not "." or "..".
bool acceptable_entry_name(std::string_view name);

class ListingGuard {
 public:
  explicit ListingGuard(std::string dir_path, size_t max_entries = kMaxListingEntries)
      : path_(std::move(dir_path)), max_entries_(max_entries) {}

  // One READDIR reply (any order): removes the names not to show (unacceptable or repeated) from
  // `batch`; an error when the listing should end here. "." and ".." count as names for the repeat
  // check (a server that sends only them, again and again, never ends either), then are removed.
  Status take(std::vector<sftp::NameEntry>& batch);
  // The listing is complete: the names seen are no longer needed.
  void forget() { seen_ = {}; }

 private:
  std::string path_;
  size_t max_entries_;
  size_t received_ = 0;
  std::unordered_set<std::string> seen_;
};

}  // namespace sftpfs::fs
