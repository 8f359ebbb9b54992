// The command line: `sftpfs [user@]host:[path] MOUNTPOINT [options]`, sshfs-compatible. Every -o name
// is looked up in one table of option specs (options.cpp); ssh_config keys given as -o Key=Value are
// collected with the files' settings (ssh_config.hpp) and turned into ssh::SessionOptions here.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/ssh_config.hpp"
#include "client/client.hpp"
#include "fs/filesystem.hpp"
#include "ssh/session.hpp"
#include "util/result.hpp"

namespace sftpfs::cli {

enum class Mode { mount, probe, cat, put, status, help, version };

// "[user@]host:[path]" or, for --probe, "[user@]host[:port]". IPv6 literals go in brackets.
struct RemoteSpec {
  std::string user;               // empty: ssh_config's User, else the local user
  std::string host;               // as given (an alias ssh_config may map to a HostName), no brackets
  std::optional<uint16_t> port;   // only from the --probe form
  std::string path;               // empty: the remote home directory
};
Result<RemoteSpec> parse_remote(std::string_view text);     // [user@]host:[path]
Result<RemoteSpec> parse_host_port(std::string_view text);  // [user@]host[:port]
// A host name is refused before any lookup when it starts with '-' or holds characters no host name
// has (see options.cpp); `where` names where it came from, for the message.
Status check_host_name(std::string_view host, std::string_view where);

struct CommandLine {
  Mode mode = Mode::mount;
  RemoteSpec remote;
  std::string mountpoint;  // also --status's
  bool foreground = false;  // -f, -d
  bool debug = false;       // -d, -o debug
  bool verbose = false;     // -v
  std::string ssh_config_file;  // -F; empty: ~/.ssh/config and /etc/ssh/ssh_config
  bool password_stdin = false;
  bool no_check_root = false;
  bool no_transform_symlinks = false;  // keep proftpd's absolute symlink targets as they come
  std::string uidfile, gidfile;  // idmap=file
  SshSettings ssh;               // from the command line (-p, -C, -o Key=Value, user@): wins over files
  client::ClientOptions client;
  fs::FsOptions fs;
};

// Parses argv (without argv[0]). Logging of accepted-but-ignored options happens here, so the caller
// sets the log level from -d/-v first: parse_command_line does that itself before reading -o.
Result<CommandLine> parse_command_line(const std::vector<std::string>& args);
std::string help_text();

// Splits one -o argument at commas; "\," is a literal comma (as libfuse's option parser allows).
std::vector<std::string> split_option_list(std::string_view text);

// Whether -o ITEM names an option sftpfs knows (its own, sshfs's, FUSE's, an fstab word or an ssh_config
// key); the value is not checked. mount.sftpfs -s (sloppy) drops the unknown ones.
bool is_known_option(std::string_view item);

// Where ssh_config comes from and what its tokens expand to.
struct SshEnvironment {
  std::string home;
  std::string local_user;
  std::string local_host;
  uid_t uid = 0;
  std::vector<std::pair<std::string, bool>> config_files;  // (path, missing_ok), read in order
};
// The running user's environment; config files per -F (alone) or ~/.ssh/config + /etc/ssh/ssh_config.
SshEnvironment current_ssh_environment(const CommandLine& command_line);

struct ResolvedSsh {
  ssh::SessionOptions session;
  std::optional<std::string> agent_socket;  // IdentityAgent=PATH: the caller sets SSH_AUTH_SOCK
};
// Reads the config files and turns command-line + file settings into session options.
Result<ResolvedSsh> resolve_ssh_options(const CommandLine& command_line, const SshEnvironment& env);

// sshfs's uidfile/gidfile: "name:remote_id" per line; the name gives the local id through the local
// passwd (users) or group database. Returns remote id -> local id.
Result<std::map<uint32_t, uint32_t>> load_id_map_file(const std::string& path, bool users);

}  // namespace sftpfs::cli
