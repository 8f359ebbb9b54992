// uidfile= and gidfile=: sshfs's "name:id" files mapping remote ids to local ones (idmap=file).
#include <grp.h>
#include <pwd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli/option_values.hpp"
#include "cli/options.hpp"
#include "util/log.hpp"

namespace sftpfs::cli {

using detail::parse_unsigned;
using detail::usage_error;

Result<std::map<uint32_t, uint32_t>> load_id_map_file(const std::string& path, bool users) {
  const char* what = users ? "uidfile" : "gidfile";
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    return Error::errno_error(errno, std::string(what) + " " + path + ": " + std::strerror(errno));
  if (st.st_mode & S_IWOTH)  // as sshfs: a file anyone can write must not decide ownership
    return Error::errno_error(EPERM, std::string(what) + " " + path + " is writable by other users; chmod o-w it");
  std::ifstream in(path);
  if (!in) return Error::errno_error(EIO, std::string(what) + " " + path + ": cannot read it");
  std::map<uint32_t, uint32_t> map;
  std::string line;
  unsigned line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    std::string_view text = line;
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
    if (text.empty() || text[0] == '#') continue;
    std::string where = std::string(what) + " " + path + " line " + std::to_string(line_number);
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
      return usage_error(where + ": expected name:id");
    std::string name(text.substr(0, colon));
    auto remote = parse_unsigned("id", text.substr(colon + 1), UINT32_MAX - 1);
    if (!remote) return usage_error(where + ": bad id '" + std::string(text.substr(colon + 1)) + "'");
    char buffer[16384];
    uint32_t local;
    if (users) {
      struct passwd entry {};
      struct passwd* found = nullptr;
      if (getpwnam_r(name.c_str(), &entry, buffer, sizeof buffer, &found) != 0 || !found)
        return usage_error(where + ": no local user '" + name + "'");
      local = found->pw_uid;
    } else {
      struct group entry {};
      struct group* found = nullptr;
      if (getgrnam_r(name.c_str(), &entry, buffer, sizeof buffer, &found) != 0 || !found)
        return usage_error(where + ": no local group '" + name + "'");
      local = found->gr_gid;
    }
    map[static_cast<uint32_t>(*remote)] = local;
  }
  return map;
}

}  // namespace sftpfs::cli
