// The ssh side of the command line: -o Key=Value, ~/.ssh/config and /etc/ssh/ssh_config resolved the
// way ssh resolves them (first value wins), into the SessionOptions a connection uses.
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cli/option_values.hpp"
#include "cli/options.hpp"
#include "util/log.hpp"

namespace sftpfs::cli {

using detail::iequals;
using detail::lower;
using detail::parse_bool;
using detail::parse_unsigned;
using detail::usage_error;

namespace {

// The keys resolve_ssh_options acts on; any other key is accepted and logged as having no effect.
const std::string_view kSshKeysWithEffect[] = {
    "batchmode", "challengeresponseauthentication", "ciphers", "compression", "connecttimeout",
    "globalknownhostsfile", "hostkeyalgorithms", "hostkeyalias", "hostname", "identitiesonly", "identityagent",
    "identityfile", "kbdinteractiveauthentication", "kexalgorithms", "macs", "passwordauthentication", "port",
    "preferredauthentications", "proxycommand", "proxyjump", "pubkeyauthentication", "serveralivecountmax",
    "serveraliveinterval", "stricthostkeychecking", "user", "userknownhostsfile",
};


}  // namespace

SshEnvironment current_ssh_environment(const CommandLine& cl) {
  SshEnvironment env;
  env.uid = getuid();
  struct passwd entry {};
  struct passwd* found = nullptr;
  char buffer[4096];
  if (getpwuid_r(env.uid, &entry, buffer, sizeof buffer, &found) == 0 && found) {
    env.local_user = found->pw_name;
    env.home = found->pw_dir;
  }
  // ssh itself uses the passwd entry; honouring HOME lets tests (and sudo -E) point somewhere else.
  if (const char* home = std::getenv("HOME"); home && *home) env.home = home;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) env.local_host = host;
  if (!cl.ssh_config_file.empty()) {
    env.config_files.emplace_back(expand_tilde(cl.ssh_config_file, env.home), false);
  } else {
    env.config_files.emplace_back(env.home + "/.ssh/config", true);
    env.config_files.emplace_back("/etc/ssh/ssh_config", true);
  }
  return env;
}

Result<ResolvedSsh> resolve_ssh_options(const CommandLine& cl, const SshEnvironment& env) {
  SshSettings settings = cl.ssh;
  HostContext ctx{cl.remote.host, env.local_user, env.home, cl.remote.user};
  for (const auto& [path, missing_ok] : env.config_files) {
    std::string base = path.rfind(env.home + "/.ssh/", 0) == 0 || !missing_ok ? env.home + "/.ssh" : "/etc/ssh";
    Status s = read_ssh_config(path, ctx, base, missing_ok, settings);
    if (!s) return s.take_error();
  }

  ResolvedSsh resolved;
  ssh::SessionOptions& o = resolved.session;
  auto value = [&](std::string_view key) -> std::optional<std::string> {
    if (const std::string* v = settings.get(key)) return *v;
    return std::nullopt;
  };
  auto bool_value = [&](std::string_view key, bool& out) -> Status {
    if (auto v = value(key)) {
      auto b = parse_bool(key, *v);
      if (!b) return b.take_error();
      out = *b;
    }
    return {};
  };

  // ProxyCommand and ProxyJump: in ssh whichever is set first wins, and "none" in either turns both off.
  // The command line comes first. Files lose the order between the two keys, so there a real value
  // beats "none" (the usual layout: specific Host blocks first, "Host *" defaults last) and two real
  // values are refused rather than guessed.
  std::optional<std::pair<std::string, std::string>> proxy;  // (key, value)
  {
    const std::string* command_cl = cl.ssh.get("ProxyCommand");
    const std::string* jump_cl = cl.ssh.get("ProxyJump");
    if (command_cl && jump_cl)
      return usage_error("both ProxyCommand and ProxyJump given with -o; give only one");
    if (command_cl) proxy.emplace("ProxyCommand", *command_cl);
    else if (jump_cl) proxy.emplace("ProxyJump", *jump_cl);
    auto command = value("ProxyCommand");
    auto jump = value("ProxyJump");
    if (!proxy && command && jump) {
      bool command_none = lower(*command) == "none";
      bool jump_none = lower(*jump) == "none";
      if (!command_none && !jump_none)
        return usage_error("the ssh configuration sets both ProxyCommand and ProxyJump for " + cl.remote.host +
                           "; choose one with -o ProxyCommand=... or -o ProxyJump=...");
      if (command_none) proxy.emplace("ProxyJump", *jump);
      else proxy.emplace("ProxyCommand", *command);
    } else if (!proxy && command) {
      proxy.emplace("ProxyCommand", *command);
    } else if (!proxy && jump) {
      proxy.emplace("ProxyJump", *jump);
    }
    if (proxy && lower(proxy->second) == "none") proxy.reset();
    if (proxy && proxy->second.empty()) return usage_error(proxy->first + " is empty; use none for no proxy");
    if (proxy && proxy->first == "ProxyCommand" && proxy->second == "-")
      return usage_error("ProxyCommand - (with ProxyUseFdpass) is not supported by sftpfs");
  }

  TokenValues tokens;
  tokens.home = env.home;
  tokens.local_user = env.local_user;
  tokens.original_host = cl.remote.host;
  tokens.local_host = env.local_host.substr(0, env.local_host.find('.'));
  tokens.uid = std::to_string(env.uid);

  // HostName may use %h (the host as given) and %%.
  tokens.host = cl.remote.host;
  if (auto v = value("HostName")) {
    auto host = expand_tokens(*v, tokens, "HostName");
    if (!host) return host.take_error();
    o.host = *host;
    if (Status ok = check_host_name(o.host, "HostName"); !ok) return ok.take_error();
  } else {
    o.host = cl.remote.host;
  }
  tokens.host = o.host;

  if (auto v = value("Port")) {
    auto port = parse_unsigned("Port", *v, 65535);
    if (!port || *port == 0) return usage_error("bad value '" + *v + "' for Port");
    o.port = static_cast<uint16_t>(*port);
  }
  tokens.port = std::to_string(o.port);
  o.user = value("User").value_or(env.local_user);
  tokens.remote_user = o.user;

  for (const std::string& file : settings.all("IdentityFile")) {
    if (lower(file) == "none") continue;
    auto path = expand_tokens(expand_tilde(file, env.home), tokens, "IdentityFile");
    if (!path) return path.take_error();
    o.identity_files.push_back(*path);
  }
  auto known_hosts_list = [&](std::string_view key, std::vector<std::string>& out) -> Status {
    auto v = value(key);
    if (!v) return {};
    auto words = split_words(*v);
    if (!words) return usage_error(std::string(key) + ": " + words.error().message);
    out.clear();
    for (const std::string& word : *words) {
      if (lower(word) == "none") {
        out = {"/dev/null"};  // no known hosts at all: every key is unknown
        return {};
      }
      auto path = expand_tokens(expand_tilde(word, env.home), tokens, key);
      if (!path) return path.take_error();
      out.push_back(*path);
    }
    return {};
  };
  if (Status s = known_hosts_list("UserKnownHostsFile", o.user_known_hosts_files); !s) return s.take_error();
  if (Status s = known_hosts_list("GlobalKnownHostsFile", o.global_known_hosts_files); !s) return s.take_error();
  if (o.user_known_hosts_files.empty()) o.user_known_hosts_files.push_back(env.home + "/.ssh/known_hosts");

  if (auto v = value("StrictHostKeyChecking")) {
    std::string mode = lower(*v);
    if (mode == "yes" || mode == "true" || mode == "ask") o.strict_host_key_checking = ssh::StrictHostKeyChecking::yes;
    else if (mode == "accept-new") o.strict_host_key_checking = ssh::StrictHostKeyChecking::accept_new;
    else if (mode == "no" || mode == "off" || mode == "false") o.strict_host_key_checking = ssh::StrictHostKeyChecking::no;
    else return usage_error("bad value '" + *v + "' for StrictHostKeyChecking: use yes, accept-new or no");
  }
  if (auto v = value("HostKeyAlias")) o.host_key_alias = *v;

  auto seconds_value = [&](std::string_view key, uint64_t max) -> Result<std::optional<uint64_t>> {
    auto v = value(key);
    if (!v) return std::optional<uint64_t>{};
    auto n = parse_unsigned(key, *v, max);
    if (!n) return n.take_error();
    return std::optional<uint64_t>(*n);
  };
  auto connect_timeout = seconds_value("ConnectTimeout", 86400);
  if (!connect_timeout) return connect_timeout.take_error();
  if (*connect_timeout && **connect_timeout > 0) o.connect_timeout = std::chrono::seconds(**connect_timeout);
  auto alive_interval = seconds_value("ServerAliveInterval", 86400);
  if (!alive_interval) return alive_interval.take_error();
  if (*alive_interval) o.server_alive_interval = std::chrono::seconds(**alive_interval);
  auto alive_count = seconds_value("ServerAliveCountMax", 1000);
  if (!alive_count) return alive_count.take_error();
  if (*alive_count) o.server_alive_count_max = static_cast<int>(**alive_count);

  if (Status s = bool_value("Compression", o.compression); !s) return s.take_error();
  if (Status s = bool_value("BatchMode", o.batch_mode); !s) return s.take_error();
  if (Status s = bool_value("IdentitiesOnly", o.identities_only); !s) return s.take_error();
  if (Status s = bool_value("PasswordAuthentication", o.password_authentication); !s) return s.take_error();
  if (settings.has("KbdInteractiveAuthentication")) {
    if (Status s = bool_value("KbdInteractiveAuthentication", o.kbd_interactive_authentication); !s)
      return s.take_error();
  } else if (Status s = bool_value("ChallengeResponseAuthentication", o.kbd_interactive_authentication); !s) {
    return s.take_error();
  }

  bool pubkey = true;
  if (Status s = bool_value("PubkeyAuthentication", pubkey); !s) return s.take_error();
  if (auto v = value("PreferredAuthentications")) {
    // A subset: which methods may be used. The transport keeps its own order (agent, keys, password).
    std::vector<std::string> methods = split_option_list(lower(*v));
    auto listed = [&](std::string_view m) { return std::find(methods.begin(), methods.end(), m) != methods.end(); };
    for (const std::string& m : methods)
      if (m != "publickey" && m != "password" && m != "keyboard-interactive" && !m.empty())
        LOG_DEBUG("PreferredAuthentications: method '%s' is not offered by sftpfs", m.c_str());
    if (!listed("publickey")) pubkey = false;
    if (!listed("password")) o.password_authentication = false;
    if (!listed("keyboard-interactive")) o.kbd_interactive_authentication = false;
  }
  o.pubkey_authentication = pubkey;

  if (auto v = value("IdentityAgent")) {
    if (lower(*v) == "none") {
      o.use_agent = false;
    } else if (*v != "SSH_AUTH_SOCK") {
      std::string socket = *v;
      if (socket.size() > 1 && socket[0] == '$') {  // IdentityAgent $VAR
        const char* env_value = std::getenv(socket.c_str() + 1);
        socket = env_value ? env_value : "";
      } else {
        auto path = expand_tokens(expand_tilde(socket, env.home), tokens, "IdentityAgent");
        if (!path) return path.take_error();
        socket = *path;
      }
      if (!socket.empty()) resolved.agent_socket = socket;
    }
  }

  if (auto v = value("Ciphers")) {
    std::string list = *v;
    if (!list.empty() && list[0] == '^') list.erase(0, 1);  // "prefer these": a preference list is that
    if (!list.empty() && (list[0] == '+' || list[0] == '-'))
      LOG_DEBUG("Ciphers=%s: changes to the default list are not supported; libssh2's defaults are used",
                v->c_str());
    else
      o.ciphers = list;
  }

  // Algorithm lists go to the transport as written (a, ^a, +a, -a*): it knows what libssh2 implements
  // and names the option when nothing usable is left.
  if (auto v = value("KexAlgorithms")) o.kex = *v;
  if (auto v = value("HostKeyAlgorithms")) o.host_key_algorithms = *v;
  if (auto v = value("MACs")) o.macs = *v;

  if (proxy && proxy->first == "ProxyCommand") {
    // ssh's tokens: %h (the HostName), %p, %r, %n (the host as given), %%; ~ is left to the shell.
    auto command = expand_tokens(proxy->second, tokens, "ProxyCommand");
    if (!command) return command.take_error();
    o.proxy_command = *command;
  } else if (proxy) {
    o.proxy_jump = proxy->second;
  }
  if (!o.proxy_jump.empty()) {
    // The jump ssh reads the same -F file (as OpenSSH passes it on); the daemon may have changed
    // directory by the time it starts, so the path is made absolute now.
    if (!cl.ssh_config_file.empty()) {
      std::string file = expand_tilde(cl.ssh_config_file, env.home);
      if (file[0] != '/') {
        char cwd[4096];
        if (getcwd(cwd, sizeof cwd)) file = std::string(cwd) + "/" + file;
      }
      o.ssh_config_file = file;
    }
    // Host-key and prompting choices given on the command line apply to the jump host too.
    for (const char* key : {"BatchMode", "StrictHostKeyChecking", "UserKnownHostsFile", "GlobalKnownHostsFile"})
      if (const std::string* v = cl.ssh.get(key)) o.proxy_jump_options.push_back(std::string(key) + "=" + *v);
  }

  for (const auto& [key, values] : settings.entries()) {
    bool acted = std::find(std::begin(kSshKeysWithEffect), std::end(kSshKeysWithEffect), key) !=
                 std::end(kSshKeysWithEffect);
    // The key only: a value such as LogLevel's ERROR would put "error" in a log where nothing failed.
    if (!acted) LOG_DEBUG("ssh option %s has no effect in sftpfs", key.c_str());
  }
  return resolved;
}

}  // namespace sftpfs::cli
