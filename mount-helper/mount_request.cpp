#include "mount-helper/mount_request.hpp"

#include <cerrno>

namespace sftpfs::mount_helper {
namespace {

Error usage_error(std::string message) { return Error::errno_error(EINVAL, std::move(message)); }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;  // ASCII letters only, which is what keys are
  return true;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// sftpfs's -o reads "\," as a comma and "\x" as x.
std::string escape_for_sftpfs(std::string_view option) {
  std::string out;
  for (char c : option) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::vector<std::string> split_mount_options(std::string_view text) {
  std::vector<std::string> items;
  std::string current;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      current += text[++i];
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      items.push_back(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  items.push_back(std::move(current));
  return items;
}

bool is_fstab_word(std::string_view option) {
  // mount(8)'s own words (user and users also make libmount add noexec,nosuid,nodev, which sftpfs
  // passes to the kernel), systemd's (_netdev, nofail, x-systemd.*) and notes (comment=, x-*, X-*).
  for (std::string_view word : {"", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "noowner",
                                "group", "nogroup", "_netdev", "nofail"})
    if (option == word) return true;
  return starts_with(option, "x-") || starts_with(option, "X-") || starts_with(option, "comment=");
}

Result<MountRequest> parse_mount_arguments(std::string_view program, const std::vector<std::string>& args) {
  MountRequest request;
  request.program = std::string(program);
  const std::string usage = "usage: " + request.program +
                            " [user@]host:[path] MOUNTPOINT [-sfnv] [-o OPTIONS] (run by mount(8); see mount.sftpfs(8))";
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-o" || arg == "-t" || arg == "-N") {
      if (i + 1 == args.size()) return usage_error("option " + arg + " needs a value; " + usage);
      const std::string& value = args[++i];
      if (arg == "-t") {
        // mount(8) names the type it chose us for: sftpfs, or fuse.sftpfs through mount.fuse.sftpfs.
        if (value != "sftpfs" && value != "fuse.sftpfs")
          return usage_error("cannot mount type " + value + " (only sftpfs and fuse.sftpfs)");
      } else if (arg == "-N") {
        return usage_error("-N (mounting in another namespace) is not supported; run mount in that namespace");
      } else {
        for (std::string& option : split_mount_options(value)) {
          if (starts_with(option, "setuid=")) {
            request.setuid_user = option.substr(7);
            if (request.setuid_user.empty()) return usage_error("setuid= needs a user name: setuid=USER");
          } else if (option == "drop_privileges") {
            return usage_error("drop_privileges is not supported by " + request.program +
                               "; use setuid=USER to run sftpfs as an ordinary user");
          } else if (is_fstab_word(option)) {
            if (!option.empty()) request.ignored.push_back(std::move(option));
          } else {
            request.options.push_back(std::move(option));
          }
        }
      }
    } else if (arg.size() > 1 && arg[0] == '-') {  // neither a remote nor an absolute mount point
      for (char flag : arg.substr(1)) {
        if (flag == 's') request.sloppy = true;
        else if (flag == 'f') request.fake = true;
        else if (flag == 'v') request.verbose = true;
        else if (flag != 'n') return usage_error("unknown flag -" + std::string(1, flag) + "; " + usage);
        // -n (do not write /etc/mtab): there is no mtab to write.
      }
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) return usage_error(usage);
  request.source = positional[0];
  // The old FUSE style "sftpfs#user@host:path" names the type in the source.
  if (starts_with(request.source, "sftpfs#")) request.source.erase(0, 7);
  request.mountpoint = positional[1];
  if (request.source.empty()) return usage_error("no source: give [user@]host:[path]; " + usage);
  return request;
}

SftpfsCommand sftpfs_command(const MountRequest& request, const std::string& home, bool as_root) {
  SftpfsCommand command;
  command.args = {request.source, request.mountpoint};
  bool dev_given = false, suid_given = false;
  for (const std::string& option : request.options) {
    std::string value = option;
    size_t eq = option.find('=');
    std::string_view name = std::string_view(option).substr(0, eq);
    if (eq != std::string::npos && iequals(name, "IdentityFile")) {
      std::string path = option.substr(eq + 1);
      if (!path.empty() && path[0] != '/' && path[0] != '~' && path[0] != '%' && !home.empty())
        value = std::string(name) + "=" + home + (home.back() == '/' ? "" : "/") + path;
    }
    if (name == "dev" || name == "nodev") dev_given = true;
    if (name == "suid" || name == "nosuid") suid_given = true;
    command.args.push_back("-o");
    command.args.push_back(escape_for_sftpfs(value));
  }
  if (as_root && !dev_given) command.args.insert(command.args.end(), {"-o", "dev"});
  if (as_root && !suid_given) command.args.insert(command.args.end(), {"-o", "suid"});
  return command;
}

}  // namespace sftpfs::mount_helper
