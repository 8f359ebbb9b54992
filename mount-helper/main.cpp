// mount.sftpfs (and mount.fuse.sftpfs): what mount(8) runs for `mount -t sftpfs`, `-t fuse.sftpfs` and
// fstab lines of either type. It takes out fstab's words, checks every option against sftpfs's own
// table before anything starts (a wrong option fails here, on stderr and in the system log, and
// nothing is mounted), switches to setuid=USER with that user's groups, home and environment, and
// then becomes sftpfs, which returns only once the filesystem is mounted: mount(8), and systemd's
// .mount units through it, see the mount when the command returns.
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sys/types.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cli/options.hpp"
#include "mount-helper/mount_request.hpp"

#ifndef SFTPFS_INSTALLED_BINARY
#define SFTPFS_INSTALLED_BINARY "/usr/bin/sftpfs"
#endif

namespace sftpfs::mount_helper {
namespace {

std::string g_program = "mount.sftpfs";

// A failure before sftpfs started, which mount(8)'s caller must see: on stderr (a terminal, or a
// unit's journal) and in the system log (a boot without systemd). 1 is mount's "incorrect invocation
// or permissions".
[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "%s: %s; nothing was mounted\n", g_program.c_str(), message.c_str());
  syslog(LOG_ERR, "%s; nothing was mounted", message.c_str());
  std::exit(1);
}

void warn(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", g_program.c_str(), message.c_str());
  syslog(LOG_WARNING, "%s", message.c_str());
}

struct Account {
  std::string name, home, shell;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::optional<Account> lookup(const char* name, uid_t uid) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  std::vector<char> buffer(16384);
  int rc = name ? getpwnam_r(name, &entry, buffer.data(), buffer.size(), &found)
                : getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found);
  if (rc != 0 || !found) return std::nullopt;
  return Account{found->pw_name, found->pw_dir ? found->pw_dir : "/", found->pw_shell ? found->pw_shell : "/bin/sh",
                 found->pw_uid, found->pw_gid};
}

// sftpfs beside this helper (a build tree, or both installed in one directory), else where it is installed.
std::string find_sftpfs() {
  char self[PATH_MAX];
  if (realpath("/proc/self/exe", self)) {
    std::string beside(self);
    beside = beside.substr(0, beside.rfind('/') + 1) + "sftpfs";
    if (access(beside.c_str(), X_OK) == 0) return beside;
  }
  if (access(SFTPFS_INSTALLED_BINARY, X_OK) == 0) return SFTPFS_INSTALLED_BINARY;
  fail("cannot find sftpfs (looked beside " + g_program + " and at " SFTPFS_INSTALLED_BINARY ")");
}

// Runs parse_command_line as sftpfs will, with its log lines silenced: sftpfs prints its warnings
// itself when it starts.
Status check_options(const std::vector<std::string>& args) {
  std::fflush(stderr);
  int saved = dup(STDERR_FILENO);
  int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (saved >= 0 && null_fd >= 0) dup2(null_fd, STDERR_FILENO);
  auto parsed = cli::parse_command_line(args);
  std::fflush(stderr);
  if (saved >= 0) {
    dup2(saved, STDERR_FILENO);
    close(saved);
  }
  if (null_fd >= 0) close(null_fd);
  if (!parsed) return parsed.take_error();
  return {};
}

// setuid=USER: that user's ids and groups, and the environment a login as that user would have for
// ssh: HOME (keys, known_hosts, ssh_config), USER, LOGNAME, SHELL; root's agent and per-user
// directories are not theirs. Checked: root cannot be regained.
void become(const Account& account) {
  if (initgroups(account.name.c_str(), account.gid) != 0)
    fail("setuid=" + account.name + ": cannot set its groups: " + std::strerror(errno));
  if (setgid(account.gid) != 0) fail("setuid=" + account.name + ": setgid failed: " + std::strerror(errno));
  if (setuid(account.uid) != 0) fail("setuid=" + account.name + ": setuid failed: " + std::strerror(errno));
  if (account.uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
    fail("setuid=" + account.name + ": root privileges could not be dropped");
  setenv("HOME", account.home.c_str(), 1);
  setenv("USER", account.name.c_str(), 1);
  setenv("LOGNAME", account.name.c_str(), 1);
  setenv("SHELL", account.shell.c_str(), 1);
  for (const char* name : {"SSH_AUTH_SOCK", "SSH_AGENT_PID", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                           "XDG_CACHE_HOME", "XDG_STATE_HOME", "MAIL"})
    unsetenv(name);
  if (chdir(account.home.c_str()) != 0 && chdir("/") != 0) fail(std::string("cannot chdir to /: ") + std::strerror(errno));
}

int run(int argc, char** argv) {
  std::string program = argv[0];
  g_program = program.substr(program.rfind('/') + 1);
  openlog(g_program.c_str(), LOG_PID, LOG_DAEMON);

  auto parsed = parse_mount_arguments(g_program, std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed) fail(parsed.error().message);
  MountRequest& request = *parsed;
  const std::string where = request.mountpoint + ": ";

  // Who sftpfs will run as.
  std::optional<Account> account;
  if (!request.setuid_user.empty()) {
    account = lookup(request.setuid_user.c_str(), 0);
    if (!account) fail(where + "setuid=" + request.setuid_user + ": no such user");
    if (account->uid != getuid() && geteuid() != 0)
      fail(where + "setuid=" + request.setuid_user + " needs root; " + g_program + " runs as uid " +
           std::to_string(getuid()));
  }
  std::optional<Account> self = lookup(nullptr, getuid());
  std::string home;
  if (account) home = account->home;
  else if (const char* env_home = std::getenv("HOME"); env_home && *env_home) home = env_home;
  else if (self) home = self->home;

  // Unknown options: named here, against sftpfs's table; with -s (sloppy) dropped with a warning.
  std::vector<std::string> kept;
  for (const std::string& option : request.options) {
    if (cli::is_known_option(option)) {
      kept.push_back(option);
    } else if (request.sloppy) {
      warn(where + "ignoring unknown option '" + option + "' (sloppy mount, -s)");
    } else {
      fail(where + "unknown option '" + option.substr(0, option.find('=')) +
           "'; see mount.sftpfs(8) and sftpfs --help");
    }
  }
  request.options = std::move(kept);

  const uid_t runs_as = account ? account->uid : getuid();
  SftpfsCommand command = sftpfs_command(request, home, runs_as == 0);
  if (Status ok = check_options(command.args); !ok) fail(where + ok.error().message);
  const std::string sftpfs = find_sftpfs();

  std::string shown = sftpfs;
  for (const std::string& arg : command.args) shown += " '" + arg + "'";
  if (request.verbose) std::fprintf(stderr, "%s: %s\n", g_program.c_str(), shown.c_str());
  if (request.fake) return 0;

  if (account) become(*account);
  else if (!std::getenv("HOME") && !home.empty()) setenv("HOME", home.c_str(), 1);  // libmount drops it for users
  // A user's mount (fstab "user") comes without PATH; ProxyCommand and ProxyJump need one.
  if (!std::getenv("PATH")) setenv("PATH", "/usr/local/bin:/usr/bin:/bin", 1);

  std::vector<char*> exec_argv;
  std::string arg0 = "sftpfs";
  exec_argv.push_back(arg0.data());
  for (std::string& arg : command.args) exec_argv.push_back(arg.data());
  exec_argv.push_back(nullptr);
  closelog();
  execv(sftpfs.c_str(), exec_argv.data());
  openlog(g_program.c_str(), LOG_PID, LOG_DAEMON);
  fail(where + "cannot run " + sftpfs + ": " + std::strerror(errno));
}

}  // namespace
}  // namespace sftpfs::mount_helper

int main(int argc, char** argv) { return sftpfs::mount_helper::run(argc, argv); }
