// sftpfs's entry: parse the command line, then mount (default), --probe, --cat or --put.
//
// The mount flow is ordered so that every failure is reported on the terminal as one line and leaves
// nothing behind: options, mount point, fork (before any thread), connect and authenticate, remote
// path check, FUSE mount; only then detach and tell the waiting parent that the mount is there.
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <libssh2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cli/daemon.hpp"
#include "cli/memory.hpp"
#include "cli/notify.hpp"
#include "cli/options.hpp"
#include "cli/probe.hpp"
#include "cli/status.hpp"
#include "cli/transfer.hpp"
#include "client/client.hpp"
#include "client/server_quirks.hpp"
#include "fs/errno_edge.hpp"
#include "fs/filesystem.hpp"
#include "fs/fuse_log.hpp"
#include "ssh/prompt.hpp"
#include "ssh/session.hpp"
#include "util/log.hpp"
#include "util/version.hpp"


namespace sftpfs::cli {
namespace {

void print_error(const std::string& message) { std::fprintf(stderr, "sftpfs: %s\n", message.c_str()); }

// "remote path /x: No such file or directory" from an SFTP error.
std::string remote_path_error(const std::string& path, const Error& error) {
  if (error.kind == Error::Kind::sftp_status) return "remote path " + path + ": " + std::strerror(fs::errno_edge(error));
  return "remote path " + path + ": " + error.message;
}

std::string bracketed(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

// The type /proc/mounts shows for `mountpoint` ("fuse.sftpfs"), or empty. The path is only made
// absolute, not resolved: resolving would stat the dead mount itself.
std::string mounted_type(const std::string& mountpoint) {
  std::string path = mountpoint;
  if (path.empty() || path[0] != '/') {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return {};
    path = std::string(cwd) + "/" + path;
  }
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::ifstream mounts("/proc/self/mounts");
  std::string source, target, type, found;
  while (mounts >> source >> target >> type) {
    std::string decoded;  // /proc/mounts writes space, tab, newline and backslash as \ooo
    for (size_t i = 0; i < target.size(); ++i) {
      if (target[i] == '\\' && i + 3 < target.size() && std::isdigit(static_cast<unsigned char>(target[i + 1]))) {
        decoded += static_cast<char>(std::stoi(target.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        decoded += target[i];
      }
    }
    if (decoded == path) found = type;  // the last one is on top
    mounts.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return found;
}

Status check_mountpoint(const std::string& mountpoint) {
  struct stat st {};
  if (stat(mountpoint.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOTCONN) {
      // A FUSE mount whose process has gone: only unmounting it helps.
      std::string type = mounted_type(mountpoint);
      std::string what = type == "fuse.sftpfs" ? "a previous sftpfs mount"
                         : type.empty()        ? "a previous FUSE mount"
                                               : "a previous FUSE mount (" + type + ")";
      return Error::errno_error(err, "mount point " + mountpoint + ": " + what +
                                         " is still there but dead (its process has ended); unmount it with: "
                                         "fusermount3 -u " + mountpoint);
    }
    if (err == ENOENT)
      return Error::errno_error(err, "mount point " + mountpoint + " does not exist; create it with: mkdir -p " +
                                         mountpoint);
    return Error::errno_error(err, "mount point " + mountpoint + ": " + std::strerror(err));
  }
  if (!S_ISDIR(st.st_mode))
    return Error::errno_error(ENOTDIR, "mount point " + mountpoint + " is not a directory");
  // Like fusermount3: an ordinary user may mount only on a directory they may write to.
  if (getuid() != 0 && access(mountpoint.c_str(), W_OK) != 0)
    return Error::errno_error(EACCES, "mount point " + mountpoint + ": you may not write to it, so you may not "
                                                                   "mount on it; use a directory you own");
  return {};
}

Result<std::shared_ptr<client::Client>> connect(const ssh::SessionOptions& session, const CommandLine& cl) {
  auto client = client::Client::connect(session, cl.client);
  if (!client) return client.take_error();
  return std::shared_ptr<client::Client>(std::move(*client));
}

// What /proc/mounts shows as the source: user@host:path as given.
std::string default_fsname(const CommandLine& cl) {
  return (cl.remote.user.empty() ? "" : cl.remote.user + "@") + bracketed(cl.remote.host) + ":" + cl.remote.path;
}

// Serves a mounted filesystem with its companions: the idle memory trimmer and the --status socket.
int serve_mounted(fs::Filesystem& filesystem, const CommandLine& cl, const std::string& mountpoint) {
  IdleTrimmer trimmer({[&filesystem] { return filesystem.activity(); },
                       [&filesystem] { return filesystem.purge_caches(); }});
  const auto mounted_at = std::chrono::system_clock::now();
  const std::string source = cl.fs.fsname.empty() ? default_fsname(cl) : cl.fs.fsname;
  auto status = StatusServer::start(mountpoint, [&filesystem, &mountpoint, &source, mounted_at] {
    StatusSnapshot snapshot;
    snapshot.mountpoint = mountpoint;
    snapshot.source = source;
    snapshot.pid = getpid();
    snapshot.mounted_at = mounted_at;
    snapshot.now = std::chrono::system_clock::now();
    snapshot.client = filesystem.client()->status();
    snapshot.fs = filesystem.stats();
    snapshot.resident_bytes = resident_bytes();
    return format_status(snapshot);
  });
  if (!status) LOG_WARN("sftpfs --status will not answer for this mount: %s", status.error().message.c_str());
  return filesystem.serve();  // the status thread and the trimmer stop before the filesystem goes
}

// Everything of the mount that can fail before the filesystem serves. On success `filesystem` is
// mounted; the caller detaches (if in the background) and serves.
Status prepare_mount(const CommandLine& cl, const ssh::SessionOptions& session, const std::string& mountpoint,
                     std::unique_ptr<fs::Filesystem>& filesystem) {
  auto client = connect(session, cl);
  if (!client) return client.take_error();
  client::Client& c = **client;

  const std::string requested = cl.remote.path.empty() ? "." : cl.remote.path;
  std::string root;
  auto resolved = client::wait_for<std::string>([&](auto done) { c.realpath(requested, done); });
  if (resolved) {
    root = *resolved;
  } else if (cl.no_check_root && !requested.empty() && requested[0] == '/') {
    root = requested;
  } else {
    return Error::errno_error(ENOENT, remote_path_error(requested, resolved.error()));
  }
  if (!cl.no_check_root) {
    auto attrs = client::wait_for<sftp::Attrs>([&](auto done) { c.stat(root, done); });
    if (!attrs) return Error::errno_error(ENOENT, remote_path_error(root, attrs.error()));
    if (attrs->has(sftp::SSH_FILEXFER_ATTR_PERMISSIONS) && !S_ISDIR(attrs->permissions))
      return Error::errno_error(ENOTDIR, "remote path " + root + ": Not a directory");
  }

  fs::FsOptions options = cl.fs;
  options.remote_root = root;
  if (!options.transform_symlinks && !cl.no_transform_symlinks &&
      client::server_makes_symlink_targets_absolute(c.session_info().remote_banner)) {
    options.transform_symlinks = true;
    LOG_INFO("%s reports symlink targets as absolute paths: showing those inside the mount relative "
             "(transform_symlinks; -o notransform_symlinks turns this off)", c.session_info().remote_banner.c_str());
  }
  if (options.fsname.empty()) options.fsname = default_fsname(cl);
  options.local_uid = getuid();
  options.local_gid = getgid();
  if (options.idmap == fs::IdMap::user) {
    // The remote user's ids: those of their home directory, as sshfs learns them.
    auto home = client::wait_for<sftp::Attrs>([&](auto done) { c.stat(".", done); });
    if (!home) return Error::errno_error(EIO, "idmap=user: cannot stat the remote home directory: " + home.error().message);
    if (!home->has(sftp::SSH_FILEXFER_ATTR_UIDGID))
      return Error::errno_error(EIO, "idmap=user: the server does not report file owners");
    options.remote_uid = home->uid;
    options.remote_gid = home->gid;
  }
  LOG_INFO("mounting %s:%s on %s", session.host.c_str(), root.c_str(), mountpoint.c_str());
  filesystem = fs::Filesystem::create(std::move(*client), std::move(options));
  if (!filesystem) return Error::errno_error(EIO, "cannot create the filesystem");
  return filesystem->mount(mountpoint);
}

int run_mount(const CommandLine& cl, const ssh::SessionOptions& session, ssh::RememberedSecrets* secrets) {
  Status mountpoint_ok = check_mountpoint(cl.mountpoint);
  if (!mountpoint_ok) {
    print_error(mountpoint_ok.error().message);
    return 1;
  }
  char absolute[PATH_MAX];
  std::string mountpoint = realpath(cl.mountpoint.c_str(), absolute) ? absolute : cl.mountpoint;

  std::optional<Background> background;
  if (!cl.foreground) {
    auto started = Background::start();  // the parent does not return from this
    if (!started) {
      print_error(started.error().message);
      return 1;
    }
    background.emplace(std::move(*started));
  }

  std::unique_ptr<fs::Filesystem> filesystem;
  Status prepared = prepare_mount(cl, session, mountpoint, filesystem);
  if (prepared && background) prepared = background->detach_and_report_ready();
  if (!prepared) {
    if (background) background->report_failure(prepared.error().message);
    else print_error(prepared.error().message);
    return 1;  // the filesystem (if mounted) and the client are torn down on the way out
  }
  if (secrets) secrets->stop_asking();  // the terminal may go away; reconnects use what was typed
  if (!background) notify_systemd("READY=1");  // a Type=notify service runs sftpfs -f
  return serve_mounted(*filesystem, cl, mountpoint);
}

int run_probe_mode(const CommandLine& cl, const ssh::SessionOptions& session) {
  auto client = connect(session, cl);
  if (!client) {
    print_error(client.error().message);
    return 1;
  }
  return run_probe(**client, std::cout);
}

int run_transfer(const CommandLine& cl, const ssh::SessionOptions& session) {
  auto client = connect(session, cl);
  if (!client) {
    print_error(client.error().message);
    return 1;
  }
  return cl.mode == Mode::cat ? cat_remote_file(**client, cl.remote.path)
                              : put_remote_file(**client, cl.remote.path);
}

Result<std::string> read_password_line() {
  std::string line;
  if (!std::getline(std::cin, line)) return Error::errno_error(EINVAL, "password_stdin: no password line on stdin");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_command_line(args);
  if (!parsed) {
    print_error(parsed.error().message);
    return 1;
  }
  CommandLine& cl = *parsed;
  if (cl.mode == Mode::help) {
    std::cout << help_text();
    return 0;
  }
  if (cl.mode == Mode::version) {
    std::cout << "sftpfs version " << kVersionString << "\n"
              << "libssh2 version " << libssh2_version(0) << "\n"
              << "FUSE library version " << fuse_pkgversion() << "\n";
    return 0;
  }

  if (cl.mode == Mode::status) return print_status(cl.mountpoint, std::cout, std::cerr);

  auto resolved = resolve_ssh_options(cl, current_ssh_environment(cl));
  if (!resolved) {
    print_error(resolved.error().message);
    return 1;
  }
  if (resolved->agent_socket) setenv("SSH_AUTH_SOCK", resolved->agent_socket->c_str(), 1);
  ssh::SessionOptions session = std::move(resolved->session);
  session.prompt = ssh::make_interactive_prompt();
  // A mount that reconnects authenticates again without a person: what was typed now is kept.
  std::shared_ptr<ssh::RememberedSecrets> secrets;
  if (cl.mode == Mode::mount && cl.client.link.reconnect) {
    secrets = std::make_shared<ssh::RememberedSecrets>(std::move(session.prompt));
    session.prompt = [secrets](const std::string& prompt, bool echo) { return secrets->prompt()(prompt, echo); };
  }
  if (cl.password_stdin) {
    if (cl.mode == Mode::put) {
      print_error("password_stdin cannot be used with --put, which reads the file from stdin");
      return 1;
    }
    auto password = read_password_line();
    if (!password) {
      print_error(password.error().message);
      return 1;
    }
    session.password = std::move(*password);
  }

  switch (cl.mode) {
    case Mode::probe: return run_probe_mode(cl, session);
    case Mode::cat:
    case Mode::put: return run_transfer(cl, session);
    case Mode::mount: return run_mount(cl, session, secrets.get());
    default: return 1;
  }
}

}  // namespace
}  // namespace sftpfs::cli

int main(int argc, char** argv) {
  // Before anything else, and before any thread: libssh2_init is not thread-safe.
  sftpfs::ssh::global_init();
  // Before any thread too: glibc reads the arena limit when a thread first allocates.
  sftpfs::cli::tune_malloc();
  // A closed pipe or socket is an error value, never a process-killing signal.
  std::signal(SIGPIPE, SIG_IGN);
  sftpfs::fs::route_fuse_log();
  return sftpfs::cli::run(argc, argv);
}
