#include "fs/listing_guard.hpp"

#include <algorithm>

#include "util/log.hpp"

namespace sftpfs::fs {

bool acceptable_entry_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

Status ListingGuard::take(std::vector<sftp::NameEntry>& batch) {
  if (batch.empty()) return {};
  received_ += batch.size();
  if (received_ > max_entries_) {
    return Error::protocol_error("the listing of " + path_ + " goes on past " + std::to_string(max_entries_) +
                                 " names without an end");
  }
  bool anything_new = false;
  size_t invalid = 0;
  auto keep = [&](sftp::NameEntry& e) {
    if (!seen_.insert(e.filename).second) return false;  // repeated: shown once
    anything_new = true;
    if (e.filename == "." || e.filename == "..") return false;
    if (!acceptable_entry_name(e.filename)) {
      ++invalid;
      return false;
    }
    return true;
  };
  batch.erase(std::remove_if(batch.begin(), batch.end(), [&](sftp::NameEntry& e) { return !keep(e); }), batch.end());
  if (invalid > 0) LOG_WARN("ignoring %zu invalid name(s) in the listing of %s", invalid, path_.c_str());
  if (!anything_new) return Error::protocol_error("the listing of " + path_ + " repeats itself without an end");
  return {};
}

}  // namespace sftpfs::fs
