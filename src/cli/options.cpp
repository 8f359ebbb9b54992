#include "cli/options.hpp"

#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli/option_values.hpp"
#include "util/log.hpp"

namespace po = boost::program_options;

namespace sftpfs::cli {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

using detail::iequals;
using detail::lower;
using detail::parse_bool;
using detail::parse_seconds;
using detail::parse_unsigned;
using detail::usage_error;

// ---- the option table ----

enum class Takes { nothing, value, maybe };

// Timeouts are resolved after all options are read, so that a specific one (attr_timeout) wins over a
// general one (dcache_timeout) whatever their order on the command line.
struct ParseState {
  explicit ParseState(CommandLine& command_line) : cl(command_line) {}
  CommandLine& cl;
  std::optional<milliseconds> cache_timeout, stat_timeout, dir_timeout, entry_timeout, attr_timeout,
      negative_timeout;
  std::string idmap = "none";
  std::optional<bool> nomap_error;
};

using Apply = Status (*)(ParseState& state, std::string_view name, std::string_view value);

struct OptionSpec {
  std::string_view name;
  Takes takes;
  std::string_view family;  // groups the help text
  std::string_view help;    // shown by --help; for ignored options, why they are ignored
  Apply apply;
};

// Accepted because sshfs accepts it, with nothing to do in sftpfs: a debug line says why.
Status accept_without_effect(ParseState&, std::string_view name, std::string_view value);
// Accepted, and meant to work, but not implemented yet: a warning says so.
[[maybe_unused]] Status accept_not_implemented(ParseState&, std::string_view name, std::string_view value);
// Passed to the kernel mount as is (ro, nosuid, ...).
Status pass_to_fuse(ParseState& state, std::string_view name, std::string_view value) {
  std::string option(name);
  if (!value.empty()) option += "=" + std::string(value);
  state.cl.fs.extra_fuse_options.push_back(std::move(option));
  return {};
}

#define FLAG(field) [](ParseState& s, std::string_view, std::string_view) -> Status { field = true; return {}; }

// At least one second: reconnect and request timing below that would only churn.
Status set_whole_seconds(milliseconds& slot, std::string_view name, std::string_view value) {
  auto t = parse_seconds(name, value);
  if (!t) return t.take_error();
  if (*t < 1s) return usage_error(std::string(name) + " must be at least 1 second");
  slot = *t;
  return {};
}

Status set_duration(std::optional<milliseconds>& slot, std::string_view name, std::string_view value) {
  auto parsed = parse_seconds(name, value);
  if (!parsed) return parsed.take_error();
  slot = *parsed;
  return {};
}

Status set_cache(ParseState& s, std::string_view name, std::string_view value) {
  auto on = parse_bool(name, value);
  if (!on) return on.take_error();
  s.cl.fs.cache = *on;
  return {};
}

Status set_dir_cache_size(ParseState& s, std::string_view name, std::string_view value) {
  auto n = parse_unsigned(name, value, 100'000'000);
  if (!n) return n.take_error();
  s.cl.fs.dir_cache_max_entries = *n;
  return {};
}

const std::vector<std::string_view> kWorkarounds = {"none", "all", "rename", "renamexdev", "truncate",
                                                    "buflimit", "fstat", "createmode", "nodelay", "nodelaysrv"};

const OptionSpec kOptions[] = {
    // ---- sshfs ----
    {"reconnect", Takes::nothing, "sshfs", "reconnect when the connection drops (the default; see noreconnect)",
     [](ParseState& s, std::string_view, std::string_view) -> Status {
       s.cl.client.link.reconnect = true;
       return {};
     }},
    {"delay_connect", Takes::nothing, "sshfs", "sftpfs always connects before mounting, so problems show at once",
     accept_without_effect},
    {"no_check_root", Takes::nothing, "sshfs", "do not check that the remote directory exists",
     FLAG(s.cl.no_check_root)},
    {"password_stdin", Takes::nothing, "sshfs", "read the password from the first line of stdin",
     FLAG(s.cl.password_stdin)},
    {"max_conns", Takes::value, "sshfs", "N: parallel SSH connections (default 1)",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 64);
       if (!n) return n.take_error();
       if (*n == 0) return usage_error("max_conns must be at least 1");
       s.cl.client.connections = *n;
       return {};
     }},
    {"max_channels", Takes::value, "sftpfs",
     "N: SFTP channels per connection for large writes, each its own flow-control window, no extra login (default 4)",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 16);
       if (!n) return n.take_error();
       if (*n == 0) return usage_error("max_channels must be at least 1");
       s.cl.client.connection.channels = *n;
       return {};
     }},
    {"ssh_command", Takes::value, "sshfs", "CMD: ignored (sftpfs speaks SSH itself and runs no ssh command)",
     [](ParseState&, std::string_view, std::string_view value) -> Status {
       LOG_WARN("ssh_command=%.*s is ignored: sftpfs speaks SSH itself and runs no ssh command",
                static_cast<int>(value.size()), value.data());
       return {};
     }},
    {"ssh_protocol", Takes::value, "sshfs", "N: only 2 (SSH protocol 1 is long gone)",
     [](ParseState&, std::string_view, std::string_view value) -> Status {
       if (value != "2") return usage_error("ssh_protocol=" + std::string(value) + " is not supported: only SSH protocol 2");
       return {};
     }},
    {"sftp_server", Takes::value, "sshfs", "SERV: only the server's 'sftp' subsystem is supported",
     [](ParseState&, std::string_view, std::string_view value) -> Status {
       if (value != "sftp")
         return usage_error("sftp_server=" + std::string(value) +
                            " is not supported: sftpfs uses the server's 'sftp' subsystem");
       return {};
     }},
    {"directport", Takes::value, "sshfs", "PORT: not supported (sftpfs always talks SFTP over SSH)",
     [](ParseState&, std::string_view, std::string_view) -> Status {
       return usage_error("directport is not supported: sftpfs always talks SFTP over SSH");
     }},
    {"passive", Takes::nothing, "sshfs", "not supported: sftpfs makes its own SSH connection",
     [](ParseState&, std::string_view, std::string_view) -> Status {
       return usage_error("passive is not supported: sftpfs makes its own SSH connection");
     }},
    {"slave", Takes::nothing, "sshfs", "not supported (old name of passive)",
     [](ParseState&, std::string_view, std::string_view) -> Status {
       return usage_error("slave is not supported: sftpfs makes its own SSH connection");
     }},
    {"sshfs_sync", Takes::nothing, "sshfs", "no effect: writes are pipelined; failures are reported at flush/fsync/close",
     accept_without_effect},
    {"no_readahead", Takes::nothing, "sshfs", "no read prefetching beyond what the kernel asks for",
     [](ParseState& s, std::string_view, std::string_view) -> Status {
       s.cl.fs.prefetch = false;
       return {};
     }},
    {"sync_readdir", Takes::nothing, "sshfs", "no effect: readdir is always pipelined", accept_without_effect},
    {"unreliable_append", Takes::nothing, "sshfs", "no effect: appends are positioned by sftpfs",
     accept_without_effect},
    {"writeback_cache", Takes::maybe, "sshfs", "BOOL: no effect (sshfs ignores it too)", accept_without_effect},
    {"direct_io", Takes::nothing, "sshfs", "bypass the kernel page cache for file data", FLAG(s.cl.fs.direct_io)},
    {"max_read", Takes::value, "sshfs", "N: largest read the kernel sends",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 1u << 24);
       if (!n) return n.take_error();
       s.cl.fs.max_read = static_cast<uint32_t>(*n);
       return {};
     }},
    {"max_write", Takes::value, "sshfs", "N: no effect (the write size comes from the server's limits)",
     accept_without_effect},
    {"workaround", Takes::value, "sshfs", "LIST: accepted; none are needed by sftpfs",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       size_t start = 0;
       while (start <= value.size()) {
         size_t colon = value.find(':', start);
         if (colon == std::string_view::npos) colon = value.size();
         std::string_view item = value.substr(start, colon - start);
         if (item.substr(0, 2) == "no" && item != "none") item.remove_prefix(2);
         if (!item.empty() && std::find(kWorkarounds.begin(), kWorkarounds.end(), item) == kWorkarounds.end())
           return usage_error("unknown workaround '" + std::string(item) + "' in workaround=" + std::string(value));
         start = colon + 1;
       }
       return accept_without_effect(s, name, value);
     }},
    {"follow_symlinks", Takes::nothing, "sshfs", "show what symlinks point to instead of the links",
     FLAG(s.cl.fs.follow_symlinks)},
    {"transform_symlinks", Takes::nothing, "sshfs", "show absolute symlinks into the mounted directory as relative",
     FLAG(s.cl.fs.transform_symlinks)},
    {"notransform_symlinks", Takes::nothing, "sftpfs",
     "show symlink targets exactly as the server reports them (transform_symlinks is on by default for proftpd)",
     FLAG(s.cl.no_transform_symlinks)},
    {"contain_symlinks", Takes::nothing, "sshfs", "readlink fails (EPERM) for symlinks that could leave the mount",
     FLAG(s.cl.fs.contain_symlinks)},
    {"no_contain_symlinks", Takes::nothing, "sshfs", "symlinks are shown as they are (the default)",
     [](ParseState& s, std::string_view, std::string_view) -> Status { s.cl.fs.contain_symlinks = false; return {}; }},
    {"disable_hardlink", Takes::nothing, "sshfs", "link(2) fails with ENOSYS", FLAG(s.cl.fs.disable_hardlink)},
    {"debug", Takes::nothing, "sshfs", "same as -d", FLAG(s.cl.debug)},
    {"sshfs_debug", Takes::nothing, "sshfs", "same as -d", FLAG(s.cl.debug)},

    // ---- caches ----
    {"cache", Takes::value, "cache", "yes|no: no = strictly coherent mode, every lookup asks the server", set_cache},
    {"dir_cache", Takes::value, "cache", "yes|no: cache names, attributes and listings (default yes)", set_cache},
    {"dcache_timeout", Takes::value, "cache", "SECONDS: timeout of every cache (default 20)",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.cache_timeout, n, v); }},
    {"cache_timeout", Takes::value, "cache", "SECONDS: old name of dcache_timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.cache_timeout, n, v); }},
    {"dcache_stat_timeout", Takes::value, "cache", "SECONDS: attribute cache timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.stat_timeout, n, v); }},
    {"cache_stat_timeout", Takes::value, "cache", "SECONDS: old name of dcache_stat_timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.stat_timeout, n, v); }},
    {"dcache_dir_timeout", Takes::value, "cache", "SECONDS: name and listing cache timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.dir_timeout, n, v); }},
    {"cache_dir_timeout", Takes::value, "cache", "SECONDS: old name of dcache_dir_timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.dir_timeout, n, v); }},
    {"dcache_link_timeout", Takes::value, "cache", "SECONDS: no effect (symlink targets are cached with attributes)",
     accept_without_effect},
    {"cache_link_timeout", Takes::value, "cache", "SECONDS: no effect (old name of dcache_link_timeout)",
     accept_without_effect},
    {"dcache_max_size", Takes::value, "cache", "N: most directory entries cached (default 10000)",
     set_dir_cache_size},
    {"cache_max_size", Takes::value, "cache", "N: old name of dcache_max_size", set_dir_cache_size},
    {"dcache_clean_interval", Takes::value, "cache", "SECONDS: no effect (expired entries are dropped when seen)",
     accept_without_effect},
    {"dcache_min_clean_interval", Takes::value, "cache", "SECONDS: no effect", accept_without_effect},
    {"cache_clean_interval", Takes::value, "cache", "SECONDS: no effect", accept_without_effect},
    {"cache_min_clean_interval", Takes::value, "cache", "SECONDS: no effect", accept_without_effect},

    // ---- ownership ----
    {"idmap", Takes::value, "ownership", "none|user|file: user/group id mapping (default none)",
     [](ParseState& s, std::string_view, std::string_view value) -> Status {
       if (value != "none" && value != "user" && value != "file")
         return usage_error("bad value '" + std::string(value) + "' for idmap: use none, user or file");
       s.idmap = std::string(value);
       return {};
     }},
    {"uidfile", Takes::value, "ownership", "FILE: username:remote_uid lines, for idmap=file",
     [](ParseState& s, std::string_view, std::string_view value) -> Status {
       s.cl.uidfile = std::string(value);
       return {};
     }},
    {"gidfile", Takes::value, "ownership", "FILE: groupname:remote_gid lines, for idmap=file",
     [](ParseState& s, std::string_view, std::string_view value) -> Status {
       s.cl.gidfile = std::string(value);
       return {};
     }},
    {"nomap", Takes::value, "ownership", "ignore|error: ids missing from the files (default error)",
     [](ParseState& s, std::string_view, std::string_view value) -> Status {
       if (value != "ignore" && value != "error")
         return usage_error("bad value '" + std::string(value) + "' for nomap: use ignore or error");
       s.nomap_error = value == "error";
       return {};
     }},
    {"uid", Takes::value, "ownership", "N: every file shows this owner",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, UINT32_MAX - 1);
       if (!n) return n.take_error();
       s.cl.fs.uid = static_cast<uid_t>(*n);
       return {};
     }},
    {"gid", Takes::value, "ownership", "N: every file shows this group",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, UINT32_MAX - 1);
       if (!n) return n.take_error();
       s.cl.fs.gid = static_cast<gid_t>(*n);
       return {};
     }},
    {"umask", Takes::value, "ownership", "MASK: octal permission bits removed from every file",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 0777, 8);
       if (!n) return n.take_error();
       s.cl.fs.umask = static_cast<mode_t>(*n);
       return {};
     }},
    {"allow_other", Takes::nothing, "ownership", "let other users use the mount", FLAG(s.cl.fs.allow_other)},
    {"allow_root", Takes::nothing, "ownership", "let root use the mount", FLAG(s.cl.fs.allow_root)},
    {"default_permissions", Takes::nothing, "ownership", "let the kernel check permissions by mode and owner",
     FLAG(s.cl.fs.default_permissions)},

    // ---- FUSE ----
    {"kernel_cache", Takes::nothing, "fuse", "keep file data cached in the kernel across opens",
     FLAG(s.cl.fs.kernel_cache)},
    {"auto_cache", Takes::nothing, "fuse", "keep file data cached while size and mtime stay the same",
     FLAG(s.cl.fs.auto_cache)},
    {"noauto_cache", Takes::nothing, "fuse", "turn auto_cache off",
     [](ParseState& s, std::string_view, std::string_view) -> Status {
       s.cl.fs.auto_cache = false;
       return {};
     }},
    {"entry_timeout", Takes::value, "fuse", "SECONDS: kernel name cache timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.entry_timeout, n, v); }},
    {"attr_timeout", Takes::value, "fuse", "SECONDS: attribute cache timeout",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.attr_timeout, n, v); }},
    {"negative_timeout", Takes::value, "fuse", "SECONDS: how long a missing name is remembered",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_duration(s.negative_timeout, n, v); }},
    {"ac_attr_timeout", Takes::value, "fuse", "SECONDS: no effect (attr_timeout is used)", accept_without_effect},
    {"noforget", Takes::nothing, "fuse", "no effect: inode numbers are stable for the life of the mount",
     accept_without_effect},
    {"remember", Takes::value, "fuse", "SECONDS: no effect (inode numbers are stable for the life of the mount)",
     accept_without_effect},
    {"no_rofd_flush", Takes::nothing, "fuse", "no effect: flushing a read-only file costs nothing",
     accept_without_effect},
    {"fsname", Takes::value, "fuse", "NAME: the source shown in /proc/mounts (default user@host:path)",
     [](ParseState& s, std::string_view, std::string_view value) -> Status {
       s.cl.fs.fsname = std::string(value);
       return {};
     }},
    {"subtype", Takes::value, "fuse", "NAME: the type shown as fuse.NAME (default sftpfs)",
     [](ParseState& s, std::string_view, std::string_view value) -> Status {
       s.cl.fs.subtype = std::string(value);
       return {};
     }},
    {"ro", Takes::nothing, "fuse", "mount read-only", pass_to_fuse},
    {"rw", Takes::nothing, "fuse", "mount read-write (the default)", pass_to_fuse},
    {"dev", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"nodev", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"suid", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"nosuid", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"exec", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"noexec", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"atime", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"noatime", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"sync", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"async", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"dirsync", Takes::nothing, "fuse", "mount option, passed to the kernel", pass_to_fuse},
    {"auto_unmount", Takes::nothing, "fuse", "unmount when sftpfs ends, even if it is killed", pass_to_fuse},

    // ---- fstab words libfuse's mount accepts ----
    {"auto", Takes::nothing, "fstab", "fstab word, no effect here", accept_without_effect},
    {"noauto", Takes::nothing, "fstab", "fstab word, no effect here", accept_without_effect},
    {"_netdev", Takes::nothing, "fstab", "fstab word, no effect here", accept_without_effect},
    {"user", Takes::nothing, "fstab", "fstab word, no effect here (User=NAME is the ssh user)",
     accept_without_effect},
    {"users", Takes::nothing, "fstab", "fstab word, no effect here", accept_without_effect},
    {"nouser", Takes::nothing, "fstab", "fstab word, no effect here", accept_without_effect},

    // ---- sftpfs's own ----
    {"prefetch_window", Takes::value, "sftpfs", "MiB: most one file reads ahead of its reader (default 32)",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 4096);
       if (!n) return n.take_error();
       if (*n == 0) return usage_error("prefetch_window must be at least 1 (MiB); use no_readahead to turn it off");
       s.cl.fs.prefetch_max_window = *n << 20;
       return {};
     }},
    {"prefetch_budget", Takes::value, "sftpfs", "MiB: most all files read ahead together (default 96)",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 65536);
       if (!n) return n.take_error();
       s.cl.fs.prefetch_budget = *n << 20;
       if (*n == 0) s.cl.fs.prefetch = false;
       return {};
     }},
    {"write_behind_budget", Takes::value, "sftpfs",
     "MiB: most all files have written and not yet confirmed by the server (default 64; 0: every write waits)",
     [](ParseState& s, std::string_view name, std::string_view value) -> Status {
       auto n = parse_unsigned(name, value, 65536);
       if (!n) return n.take_error();
       s.cl.fs.write_behind_budget = *n << 20;
       return {};
     }},
    {"noreconnect", Takes::nothing, "sftpfs",
     "a dropped connection stays dropped: calls fail with ENOTCONN until you remount",
     [](ParseState& s, std::string_view, std::string_view) -> Status {
       s.cl.client.link.reconnect = false;
       return {};
     }},
    {"reconnect_wait", Takes::value, "sftpfs",
     "SECONDS: while the server is unreachable, a call waits this long for a reconnect, then fails with EIO (default 20)",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_whole_seconds(s.cl.client.link.wait, n, v); }},
    {"reconnect_max_delay", Takes::value, "sftpfs",
     "SECONDS: longest pause between reconnect attempts; they start at 1 s and double (default 30)",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_whole_seconds(s.cl.client.link.max_delay, n, v); }},
    {"request_timeout", Takes::value, "sftpfs", "SECONDS: a request unanswered this long fails (default 60)",
     [](ParseState& s, std::string_view n, std::string_view v) { return set_whole_seconds(s.cl.client.connection.request_timeout, n, v); }},
};
#undef FLAG

// ssh_config keys accepted as -o Key=Value (sshfs's list, plus User). Compared without regard to case.
// Those with an effect are handled in resolve_ssh_options; the rest are logged there as ignored.
const std::string_view kSshKeys[] = {
    "AddressFamily", "BatchMode", "BindAddress", "BindInterface", "CertificateFile",
    "ChallengeResponseAuthentication", "CheckHostIP", "Cipher", "Ciphers", "Compression", "CompressionLevel",
    "ConnectionAttempts", "ConnectTimeout", "ControlMaster", "ControlPath", "ControlPersist", "FingerprintHash",
    "GlobalKnownHostsFile", "GSSAPIAuthentication", "GSSAPIDelegateCredentials", "HostbasedAuthentication",
    "HostbasedKeyTypes", "HostKeyAlgorithms", "HostKeyAlias", "HostName", "IdentitiesOnly", "IdentityFile",
    "IdentityAgent", "IPQoS", "KbdInteractiveAuthentication", "KbdInteractiveDevices", "KexAlgorithms",
    "LocalCommand", "LogLevel", "MACs", "NoHostAuthenticationForLocalhost", "NumberOfPasswordPrompts",
    "PasswordAuthentication", "PermitLocalCommand", "PKCS11Provider", "Port", "PreferredAuthentications",
    "ProxyCommand", "ProxyJump", "ProxyUseFdpass", "PubkeyAcceptedKeyTypes", "PubkeyAuthentication",
    "RekeyLimit", "RevokedHostKeys", "RhostsRSAAuthentication", "RSAAuthentication", "ServerAliveCountMax",
    "ServerAliveInterval", "SmartcardDevice", "StrictHostKeyChecking", "TCPKeepAlive", "UpdateHostKeys",
    "UsePrivilegedPort", "User", "UserKnownHostsFile", "VerifyHostKeyDNS", "VisualHostKey",
};

const OptionSpec* find_option(std::string_view name) {
  for (const OptionSpec& spec : kOptions)
    if (spec.name == name) return &spec;
  return nullptr;
}

const std::string_view* find_ssh_key(std::string_view name) {
  for (const std::string_view& key : kSshKeys)
    if (iequals(key, name)) return &key;
  return nullptr;
}

Status accept_without_effect(ParseState&, std::string_view name, std::string_view) {
  const OptionSpec* spec = find_option(name);
  LOG_DEBUG("option '%.*s' accepted: %.*s", static_cast<int>(name.size()), name.data(),
            spec ? static_cast<int>(spec->help.size()) : 9, spec ? spec->help.data() : "no effect");
  return {};
}

[[maybe_unused]] Status accept_not_implemented(ParseState&, std::string_view name, std::string_view) {
  const OptionSpec* spec = find_option(name);
  LOG_WARN("option '%.*s' is accepted but has no effect yet (%.*s)", static_cast<int>(name.size()), name.data(),
           spec ? static_cast<int>(spec->help.size()) : 0, spec ? spec->help.data() : "");
  return {};
}

Status apply_mount_option(ParseState& state, std::string_view item) {
  if (item.empty()) return {};
  size_t eq = item.find('=');
  std::string_view name = item.substr(0, eq);
  bool has_value = eq != std::string_view::npos;
  std::string_view value = has_value ? item.substr(eq + 1) : std::string_view{};

  const OptionSpec* spec = find_option(name);
  // "user" alone is an fstab word; "user=NAME" is ssh's User.
  if (spec && spec->takes == Takes::nothing && has_value && find_ssh_key(name)) spec = nullptr;
  if (spec) {
    if (spec->takes == Takes::nothing && has_value)
      return usage_error("option '" + std::string(name) + "' takes no value");
    if (spec->takes == Takes::value && (!has_value || value.empty()))
      return usage_error("option '" + std::string(name) + "' needs a value: -o " + std::string(name) + "=VALUE");
    return spec->apply(state, name, value);
  }
  if (const std::string_view* key = find_ssh_key(name)) {
    if (!has_value || value.empty())
      return usage_error("ssh option '" + std::string(*key) + "' needs a value: -o " + std::string(*key) + "=VALUE");
    state.cl.ssh.add(*key, std::string(value));
    return {};
  }
  // x-* (e.g. x-systemd.automount) and comment= are fstab notes for other tools; mount helpers do not
  // always strip them, and a filesystem must not fail on them.
  if (name.substr(0, 2) == "x-" || name == "comment") {
    LOG_DEBUG("fstab option '%.*s' ignored", static_cast<int>(item.size()), item.data());
    return {};
  }
  return usage_error("unknown option '" + std::string(name) + "'; see sftpfs --help");
}

Status finish(ParseState& state) {
  fs::FsOptions& fs = state.cl.fs;
  if (state.attr_timeout) fs.attr_timeout = *state.attr_timeout;
  else if (state.stat_timeout) fs.attr_timeout = *state.stat_timeout;
  else if (state.cache_timeout) fs.attr_timeout = *state.cache_timeout;
  if (state.dir_timeout) fs.dir_timeout = *state.dir_timeout;
  else if (state.cache_timeout) fs.dir_timeout = *state.cache_timeout;
  if (state.entry_timeout) fs.entry_timeout = *state.entry_timeout;
  else if (state.dir_timeout) fs.entry_timeout = *state.dir_timeout;
  else if (state.cache_timeout) fs.entry_timeout = *state.cache_timeout;
  if (state.negative_timeout) fs.negative_timeout = *state.negative_timeout;

  if (state.idmap == "none") {
    fs.idmap = fs::IdMap::none;
  } else if (state.idmap == "user") {
    fs.idmap = fs::IdMap::user;
  } else {
    fs.idmap = fs::IdMap::file;
    if (state.cl.uidfile.empty() && state.cl.gidfile.empty())
      return usage_error("idmap=file needs uidfile=FILE and/or gidfile=FILE");
    if (!state.cl.uidfile.empty()) {
      auto map = load_id_map_file(state.cl.uidfile, true);
      if (!map) return map.take_error();
      fs.uid_map = std::move(*map);
    }
    if (!state.cl.gidfile.empty()) {
      auto map = load_id_map_file(state.cl.gidfile, false);
      if (!map) return map.take_error();
      fs.gid_map = std::move(*map);
    }
  }
  fs.nomap_error = state.nomap_error.value_or(true);  // sshfs's default: error
  if (state.idmap != "file" && (!state.cl.uidfile.empty() || !state.cl.gidfile.empty()))
    LOG_WARN("uidfile/gidfile are used only with idmap=file");
  // The server checks permissions only as the remote user, so without the kernel's check every local
  // user would get the remote user's access to every file.
  if (state.cl.mode == Mode::mount && fs.allow_other && !fs.default_permissions)
    LOG_WARN("allow_other without default_permissions: every local user gets the remote user's access to every "
             "file; add default_permissions so the kernel checks each user against the files' owner and mode");

  if (state.cl.debug) {
    state.cl.foreground = true;
    fs.debug = true;
  }
  return {};
}

// ---- help ----

struct FamilyTitle {
  std::string_view family, title;
};
const FamilyTitle kFamilies[] = {
    {"sshfs", "sshfs options"},
    {"cache", "Cache options"},
    {"ownership", "Ownership and permissions"},
    {"fuse", "FUSE and mount options"},
    {"sftpfs", "sftpfs options"},
};

}  // namespace

std::vector<std::string> split_option_list(std::string_view text) {
  std::vector<std::string> items;
  std::string current;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      current += text[++i];
    } else if (text[i] == ',') {
      items.push_back(std::move(current));
      current.clear();
    } else {
      current += text[i];
    }
  }
  items.push_back(std::move(current));
  return items;
}

bool is_known_option(std::string_view item) {
  std::string_view name = item.substr(0, item.find('='));
  return find_option(name) || find_ssh_key(name) || name.substr(0, 2) == "x-" || name == "comment";
}

namespace {

// Splits "[user@]rest": the last '@' before the host separates the user (user names may contain '@').
void split_user(std::string_view& text, std::string& user) {
  size_t colon_or_bracket = text.find_first_of(":[");
  std::string_view head = text.substr(0, colon_or_bracket);
  size_t at = head.rfind('@');
  if (at != std::string_view::npos) {
    user = std::string(text.substr(0, at));
    text.remove_prefix(at + 1);
  }
}

}  // namespace

Status check_host_name(std::string_view host, std::string_view where) {
  auto refuse = [&](const std::string& why) -> Status {
    return usage_error("invalid host name '" + std::string(host) + "' in " + std::string(where) + ": " + why);
  };
  if (host.empty()) return refuse("it is empty");
  // ssh -W and ProxyCommand's %h pass the host on: one starting with '-' would be taken for an option.
  if (host[0] == '-') return refuse("a host name cannot start with '-'");
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_' || c == ':' || c == '%';  // ':' for IPv6 addresses, '%' for their zone
    if (!ok) return refuse("host names hold only letters, digits, '.', '-', '_' (and ':' or '%' in IPv6 addresses)");
  }
  return {};
}

namespace {

// Takes the host from the front of `text`: "[v6]" or up to ':'.
Result<std::string> take_host(std::string_view& text, std::string_view whole) {
  std::string host;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos)
      return usage_error("missing ']' after the IPv6 address in '" + std::string(whole) + "'");
    host = std::string(text.substr(1, close - 1));
    text.remove_prefix(close + 1);
  } else {
    size_t colon = text.find(':');
    host = std::string(text.substr(0, colon));
    text.remove_prefix(colon == std::string_view::npos ? text.size() : colon);
  }
  if (host.empty()) return usage_error("no host name in '" + std::string(whole) + "'");
  // Refused before it is looked up anywhere (ssh_config, DNS, a proxy's command line).
  if (Status ok = check_host_name(host, "'" + std::string(whole) + "'"); !ok) return ok.take_error();
  return host;
}

}  // namespace

Result<RemoteSpec> parse_remote(std::string_view whole) {
  RemoteSpec spec;
  std::string_view text = whole;
  split_user(text, spec.user);
  if (!spec.user.empty() || whole.find('@') != std::string_view::npos) {
    if (spec.user.empty()) return usage_error("empty user name in '" + std::string(whole) + "'");
  }
  auto host = take_host(text, whole);
  if (!host) return host.take_error();
  spec.host = std::move(*host);
  if (text.empty() || text[0] != ':')
    return usage_error("the remote must look like [user@]host:[path], got '" + std::string(whole) +
                       "' (add ':' after the host for the home directory)");
  spec.path = std::string(text.substr(1));
  return spec;
}

Result<RemoteSpec> parse_host_port(std::string_view whole) {
  RemoteSpec spec;
  std::string_view text = whole;
  split_user(text, spec.user);
  if (whole.find('@') != std::string_view::npos && spec.user.empty())
    return usage_error("empty user name in '" + std::string(whole) + "'");
  auto host = take_host(text, whole);
  if (!host) return host.take_error();
  spec.host = std::move(*host);
  if (!text.empty()) {
    if (text[0] != ':') return usage_error("expected [user@]host[:port], got '" + std::string(whole) + "'");
    text.remove_prefix(1);
    if (!text.empty()) {
      auto port = parse_unsigned("port", text, 65535);
      if (!port || *port == 0) return usage_error("bad port '" + std::string(text) + "' in '" + std::string(whole) + "'");
      spec.port = static_cast<uint16_t>(*port);
    }
  }
  return spec;
}

Result<CommandLine> parse_command_line(const std::vector<std::string>& args) {
  po::options_description visible;
  // clang-format off
  visible.add_options()
      ("help,h", "print help")
      ("version,V", "print version")
      ("foreground,f", "stay in the foreground")
      ("debug,d", "debug output (implies -f)")
      ("singlethread,s", "single-threaded")
      ("verbose,v", "more log output")
      ("compress,C", "same as -o Compression=yes")
      ("port,p", po::value<std::string>(), "same as -o Port=PORT")
      ("ssh-config,F", po::value<std::string>(), "ssh configuration file")
      ("option,o", po::value<std::vector<std::string>>(), "options")
      ("probe", po::value<std::string>(), "probe a server")
      ("cat", po::value<std::string>(), "copy a remote file to stdout")
      ("put", po::value<std::string>(), "copy stdin to a remote file")
      ("status", po::value<std::string>(), "print a running mount's status");
  po::options_description hidden;
  hidden.add_options()("positional", po::value<std::vector<std::string>>(), "");
  // clang-format on
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add("positional", -1);

  po::variables_map vm;
  try {
    int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
    po::store(po::command_line_parser(args).options(all).positional(positional).style(style).run(), vm);
  } catch (const po::unknown_option& e) {
    return usage_error("unknown option '" + e.get_option_name() + "'; see sftpfs --help");
  } catch (const po::error& e) {
    return usage_error(std::string(e.what()) + "; see sftpfs --help");
  }

  CommandLine cl;
  if (vm.count("help")) {
    cl.mode = Mode::help;
    return cl;
  }
  if (vm.count("version")) {
    cl.mode = Mode::version;
    return cl;
  }
  cl.debug = vm.count("debug") != 0;
  cl.verbose = vm.count("verbose") != 0;
  cl.foreground = vm.count("foreground") != 0;
  cl.fs.single_threaded = vm.count("singlethread") != 0;
  if (vm.count("ssh-config")) cl.ssh_config_file = vm["ssh-config"].as<std::string>();

  // -d also comes as -o debug: look for it first, so the log level is right for the rest.
  std::vector<std::string> items;
  if (vm.count("option"))
    for (const std::string& arg : vm["option"].as<std::vector<std::string>>())
      for (std::string& item : split_option_list(arg)) items.push_back(std::move(item));
  for (const std::string& item : items)
    if (item == "debug" || item == "sshfs_debug") cl.debug = true;
  if (cl.debug) log::set_level(log::Level::debug);
  else if (cl.verbose) log::set_level(log::Level::info);

  std::vector<std::string> rest;
  if (vm.count("positional")) rest = vm["positional"].as<std::vector<std::string>>();
  int modes = static_cast<int>(vm.count("probe") + vm.count("cat") + vm.count("put") + vm.count("status"));
  if (modes > 1) return usage_error("use only one of --probe, --cat, --put and --status");
  if (modes == 1) {
    if (!rest.empty()) return usage_error("unexpected argument '" + rest.front() + "'; see sftpfs --help");
    if (vm.count("status")) {
      cl.mode = Mode::status;
      cl.mountpoint = vm["status"].as<std::string>();
      if (cl.mountpoint.empty()) return usage_error("--status needs a mount point");
    } else if (vm.count("probe")) {
      cl.mode = Mode::probe;
      auto target = parse_host_port(vm["probe"].as<std::string>());
      if (!target) return target.take_error();
      cl.remote = std::move(*target);
    } else {
      cl.mode = vm.count("cat") ? Mode::cat : Mode::put;
      auto target = parse_remote(vm[vm.count("cat") ? "cat" : "put"].as<std::string>());
      if (!target) return target.take_error();
      if (target->path.empty()) return usage_error("--cat and --put need a remote file: [user@]host:PATH");
      cl.remote = std::move(*target);
    }
  } else {
    if (rest.empty()) return usage_error("missing the remote and the mount point; usage: sftpfs [user@]host:[path] MOUNTPOINT [options]");
    if (rest.size() == 1) return usage_error("missing the mount point; usage: sftpfs [user@]host:[path] MOUNTPOINT [options]");
    if (rest.size() > 2) return usage_error("unexpected argument '" + rest[2] + "'; see sftpfs --help");
    auto remote = parse_remote(rest[0]);
    if (!remote) return remote.take_error();
    cl.remote = std::move(*remote);
    cl.mountpoint = rest[1];
  }

  // Command-line ssh settings, in ssh's order of precedence: the first value of a key wins.
  if (!cl.remote.user.empty()) cl.ssh.add("User", cl.remote.user);
  if (cl.remote.port) cl.ssh.add("Port", std::to_string(*cl.remote.port));
  if (vm.count("port")) {
    auto port = parse_unsigned("-p", vm["port"].as<std::string>(), 65535);
    if (!port || *port == 0) return usage_error("bad port '" + vm["port"].as<std::string>() + "' for -p");
    cl.ssh.add("Port", std::to_string(*port));
  }
  if (vm.count("compress")) cl.ssh.add("Compression", "yes");

  ParseState state(cl);
  for (const std::string& item : items) {
    Status s = apply_mount_option(state, item);
    if (!s) return s.take_error();
  }
  Status s = finish(state);
  if (!s) return s.take_error();
  return cl;
}

std::string help_text() {
  std::ostringstream out;
  out << "usage: sftpfs [user@]host:[path] MOUNTPOINT [options]\n"
         "       sftpfs --probe [user@]host[:port] [options]\n"
         "       sftpfs --cat [user@]host:PATH [options] > FILE\n"
         "       sftpfs --put [user@]host:PATH [options] < FILE\n"
         "       sftpfs --status MOUNTPOINT\n"
         "\n"
         "Mounts a remote directory over SFTP. Without a path, the remote home directory is mounted.\n"
         "IPv6 addresses go in brackets: [::1]:/srv. Unmount with: fusermount3 -u MOUNTPOINT\n"
         "\n"
         "General options:\n"
         "    -h, --help            print this help\n"
         "    -V, --version         print the version\n"
         "    -f                    stay in the foreground\n"
         "    -d, --debug           debug output, FUSE debug output, foreground\n"
         "    -s                    single-threaded FUSE loop\n"
         "    -v, --verbose         informational messages\n"
         "    -p PORT               same as -o Port=PORT\n"
         "    -C                    same as -o Compression=yes\n"
         "    -F FILE               ssh configuration file instead of ~/.ssh/config and /etc/ssh/ssh_config\n"
         "    -o OPT[,OPT...]       mount options (below); may be repeated; write a comma inside a\n"
         "                          value as \\, (e.g. -o Ciphers=aes128-ctr\\,aes256-ctr)\n"
         "    --probe TARGET        connect and print the server's version, extensions, limits,\n"
         "                          algorithms and round-trip time\n"
         "    --cat REMOTE          copy a remote file to stdout\n"
         "    --put REMOTE          copy stdin to a remote file\n"
         "    --status MOUNTPOINT   print a running mount's connections (state, round-trip time,\n"
         "                          requests in flight, bytes moved), cache hit rates and memory\n";
  for (const FamilyTitle& family : kFamilies) {
    out << "\n" << family.title << ":\n";
    for (const OptionSpec& spec : kOptions) {
      if (spec.family != family.family) continue;
      // "N: parallel connections" shows as "-o max_conns=N   parallel connections".
      std::string_view help = spec.help;
      std::string placeholder = "VALUE";
      size_t colon = help.find(": ");
      if (spec.takes != Takes::nothing && colon != std::string_view::npos &&
          help.substr(0, colon).find(' ') == std::string_view::npos) {
        placeholder = std::string(help.substr(0, colon));
        help.remove_prefix(colon + 2);
      }
      std::string left = "    -o " + std::string(spec.name);
      if (spec.takes == Takes::value) left += "=" + placeholder;
      if (spec.takes == Takes::maybe) left += "[=" + placeholder + "]";
      out << left;
      if (left.size() >= 34) out << "\n" << std::string(34, ' ');
      else out << std::string(34 - left.size(), ' ');
      out << help << "\n";
    }
  }
  out << "\nfstab words (auto, noauto, _netdev, user, users, nouser, x-*, comment=) are accepted and ignored.\n";
  out << "\nssh options, as in ssh_config(5), also read from the ssh configuration files:\n"
         "    -o Key=Value          keys are case-insensitive. With an effect: User, Port, HostName,\n"
         "                          IdentityFile (repeatable), IdentitiesOnly, IdentityAgent,\n"
         "                          StrictHostKeyChecking (yes|accept-new|no), UserKnownHostsFile,\n"
         "                          GlobalKnownHostsFile, HostKeyAlias, ConnectTimeout,\n"
         "                          ServerAliveInterval, ServerAliveCountMax, Compression, Ciphers,\n"
         "                          KexAlgorithms, HostKeyAlgorithms, MACs (a,b | ^a | +a | -a*; names\n"
         "                          libssh2 lacks are skipped), BatchMode, PasswordAuthentication,\n"
         "                          KbdInteractiveAuthentication, PubkeyAuthentication,\n"
         "                          PreferredAuthentications, ProxyCommand (%h %p %r %n %%; none),\n"
         "                          ProxyJump ([user@]host[:port][,...]; none; run as ssh -W with -F and\n"
         "                          the command line's BatchMode and known-hosts options).\n"
         "                          Accepted without effect: the rest of sshfs's list (AddressFamily,\n"
         "                          CheckHostIP, ControlMaster, LogLevel, ...).\n";
  return out.str();
}

}  // namespace sftpfs::cli
