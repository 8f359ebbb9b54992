// Command-line parsing: every family of -o option, the short flags, remotes, and error messages.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "cli/options.hpp"

namespace sftpfs::cli {
namespace {

using namespace std::chrono_literals;

Result<CommandLine> parse(std::vector<std::string> args) { return parse_command_line(args); }

CommandLine parse_ok(std::vector<std::string> args) {
  auto r = parse(args);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
  return r ? std::move(r).value() : CommandLine{};
}

std::string parse_error(std::vector<std::string> args) {
  auto r = parse(args);
  EXPECT_FALSE(r.has_value());
  return r ? "" : r.error().message;
}

// A private temp dir with a few files for tests that read files.
class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/sftpfs-cli-test-XXXXXX";
    path_ = mkdtemp(templ);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0644) {
    std::string p = path_ + "/" + name;
    std::ofstream(p) << text;
    chmod(p.c_str(), mode);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

SshEnvironment no_files_env() {
  SshEnvironment env;
  env.home = "/home/alice";
  env.local_user = "alice";
  env.local_host = "box.example";
  env.uid = 1000;
  return env;
}

TEST(RemoteSpec, UserHostPath) {
  auto r = parse_remote("bob@example.com:/srv/data");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->user, "bob");
  EXPECT_EQ(r->host, "example.com");
  EXPECT_EQ(r->path, "/srv/data");
}

TEST(RemoteSpec, NoPathMeansHome) {
  auto r = parse_remote("example.com:");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->user, "");
  EXPECT_EQ(r->path, "");
  auto relative = parse_remote("h:docs/x");
  ASSERT_TRUE(relative);
  EXPECT_EQ(relative->path, "docs/x");
}

TEST(RemoteSpec, Ipv6InBrackets) {
  auto r = parse_remote("[::1]:/path");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->host, "::1");
  EXPECT_EQ(r->path, "/path");
  auto with_user = parse_remote("me@[fe80::1%eth0]:");
  ASSERT_TRUE(with_user) << with_user.error().message;
  EXPECT_EQ(with_user->user, "me");
  EXPECT_EQ(with_user->host, "fe80::1%eth0");
  EXPECT_EQ(with_user->path, "");
}

TEST(RemoteSpec, UserWithAtSign) {
  auto r = parse_remote("me@corp.example@gateway:/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->user, "me@corp.example");
  EXPECT_EQ(r->host, "gateway");
}

TEST(RemoteSpec, Errors) {
  EXPECT_FALSE(parse_remote("hostonly"));
  EXPECT_NE(parse_remote("hostonly").error().message.find("[user@]host:[path]"), std::string::npos);
  EXPECT_FALSE(parse_remote("[::1/path"));
  EXPECT_FALSE(parse_remote(":/path"));
  EXPECT_FALSE(parse_remote("@host:/p"));
  EXPECT_FALSE(parse_remote("[::1]/x"));
}

TEST(RemoteSpec, HostNamesNoHostHasAreRefusedBeforeAnyLookup) {
  for (const char* remote : {"-oProxyCommand=touch x:/p", "-host:", "ho st:", "host;rm:", "h$(id):", "a`b`:",
                             "h|x:", "h\tx:", "h/x:", "[-1::]:/p", "u@-h:"}) {
    auto r = parse_remote(remote);
    ASSERT_FALSE(r) << remote;
    EXPECT_NE(r.error().message.find("invalid host name"), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(parse_host_port("-evil"));
  for (const char* remote : {"example.com:", "my_alias:", "10.0.0.1:/x", "[fe80::1%eth0]:", "host-1.example:"})
    EXPECT_TRUE(parse_remote(remote)) << remote;
  EXPECT_TRUE(check_host_name("a-b.c_d", "test"));
  EXPECT_FALSE(check_host_name("", "test"));
}

TEST(SshKeys, HostNameFromTheConfigurationIsCheckedToo) {
  auto cl = parse_ok({"srv:", "/m", "-o", "HostName=-oProxyCommand=x"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_FALSE(resolved);
  EXPECT_NE(resolved.error().message.find("invalid host name"), std::string::npos) << resolved.error().message;
}

TEST(RemoteSpec, ProbeTarget) {
  auto plain = parse_host_port("host");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->port);
  auto full = parse_host_port("u@[::1]:2222");
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_EQ(full->user, "u");
  EXPECT_EQ(full->host, "::1");
  EXPECT_EQ(*full->port, 2222);
  EXPECT_FALSE(parse_host_port("host:99999"));
  EXPECT_FALSE(parse_host_port("host:0"));
  EXPECT_FALSE(parse_host_port("host:abc"));
}

TEST(CommandLine, MountDefaults) {
  auto cl = parse_ok({"host:/data", "/mnt/x"});
  EXPECT_EQ(cl.mode, Mode::mount);
  EXPECT_EQ(cl.remote.host, "host");
  EXPECT_EQ(cl.remote.path, "/data");
  EXPECT_EQ(cl.mountpoint, "/mnt/x");
  EXPECT_FALSE(cl.foreground);
  EXPECT_TRUE(cl.fs.cache);
  EXPECT_EQ(cl.client.connections, 1u);
  EXPECT_EQ(cl.fs.idmap, fs::IdMap::none);
}

TEST(CommandLine, OptionsMayFollowPositionals) {
  auto cl = parse_ok({"-o", "allow_other", "host:", "/mnt", "-f", "-o", "uid=5"});
  EXPECT_TRUE(cl.fs.allow_other);
  EXPECT_TRUE(cl.foreground);
  EXPECT_EQ(*cl.fs.uid, 5u);
}

TEST(CommandLine, JoinedShortOptionValue) {
  auto cl = parse_ok({"-oallow_other,ro", "h:", "/m", "-fs"});
  EXPECT_TRUE(cl.fs.allow_other);
  EXPECT_EQ(cl.fs.extra_fuse_options, std::vector<std::string>{"ro"});
  EXPECT_TRUE(cl.foreground);
  EXPECT_TRUE(cl.fs.single_threaded);
}

TEST(CommandLine, ShortFlags) {
  auto cl = parse_ok({"-p", "2222", "-C", "-F", "/tmp/cfg", "-s", "h:", "/m"});
  EXPECT_EQ(*cl.ssh.get("port"), "2222");
  EXPECT_EQ(*cl.ssh.get("compression"), "yes");
  EXPECT_EQ(cl.ssh_config_file, "/tmp/cfg");
  EXPECT_TRUE(cl.fs.single_threaded);
  auto joined = parse_ok({"-p2222", "h:", "/m"});
  EXPECT_EQ(*joined.ssh.get("port"), "2222");
  EXPECT_NE(parse_error({"-p", "x", "h:", "/m"}).find("-p"), std::string::npos);
}

TEST(CommandLine, DebugImpliesForegroundAndFuseDebug) {
  auto cl = parse_ok({"-d", "h:", "/m"});
  EXPECT_TRUE(cl.debug);
  EXPECT_TRUE(cl.foreground);
  EXPECT_TRUE(cl.fs.debug);
  auto via_o = parse_ok({"h:", "/m", "-o", "sshfs_debug"});
  EXPECT_TRUE(via_o.foreground);
}

TEST(CommandLine, HelpAndVersion) {
  EXPECT_EQ(parse_ok({"--help"}).mode, Mode::help);
  EXPECT_EQ(parse_ok({"-h"}).mode, Mode::help);
  EXPECT_EQ(parse_ok({"-V"}).mode, Mode::version);
  EXPECT_EQ(parse_ok({"--version"}).mode, Mode::version);
  std::string help = help_text();
  for (const char* word : {"idmap", "dir_cache", "allow_other", "max_conns", "StrictHostKeyChecking", "--probe"})
    EXPECT_NE(help.find(word), std::string::npos) << word;
}

TEST(CommandLine, MissingArguments) {
  EXPECT_NE(parse_error({}).find("usage"), std::string::npos);
  EXPECT_NE(parse_error({"host:"}).find("missing the mount point"), std::string::npos);
  EXPECT_NE(parse_error({"host:", "/m", "extra"}).find("'extra'"), std::string::npos);
}

TEST(CommandLine, UnknownOptionsAreNamed) {
  EXPECT_EQ(parse_error({"h:", "/m", "-o", "foo"}), "unknown option 'foo'; see sftpfs --help");
  EXPECT_EQ(parse_error({"h:", "/m", "-o", "allow_other,bogus=1"}), "unknown option 'bogus'; see sftpfs --help");
  EXPECT_NE(parse_error({"h:", "/m", "--frobnicate"}).find("'--frobnicate'"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-x"}).find("'-x'"), std::string::npos);
  // sshfs rejects these too
  EXPECT_NE(parse_error({"h:", "/m", "-o", "nonempty"}).find("nonempty"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "SendEnv=X"}).find("SendEnv"), std::string::npos);
}

TEST(CommandLine, ValueChecks) {
  EXPECT_NE(parse_error({"h:", "/m", "-o", "uid"}).find("needs a value"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "allow_other=1"}).find("takes no value"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "uid=abc"}).find("uid"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "umask=999"}).find("umask"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "dir_cache=maybe"}).find("dir_cache"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "idmap=magic"}).find("idmap"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "max_conns=0"}).find("max_conns"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "workaround=rename:bogus"}).find("bogus"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "directport=22"}).find("directport"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "ssh_protocol=1"}).find("protocol"), std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "IdentityFile"}).find("IdentityFile"), std::string::npos);
}

TEST(SshfsOptions, Mapped) {
  auto cl = parse_ok({"h:", "/m", "-o",
                      "reconnect,password_stdin,max_conns=4,no_check_root,direct_io,max_read=65536,"
                      "follow_symlinks,disable_hardlink"});
  EXPECT_TRUE(cl.client.link.reconnect);
  EXPECT_TRUE(cl.password_stdin);
  EXPECT_EQ(cl.client.connections, 4u);
  EXPECT_TRUE(cl.no_check_root);
  EXPECT_TRUE(cl.fs.direct_io);
  EXPECT_EQ(cl.fs.max_read, 65536u);
  EXPECT_TRUE(cl.fs.follow_symlinks);
  EXPECT_TRUE(cl.fs.disable_hardlink);
}

TEST(SshfsOptions, Prefetch) {
  EXPECT_TRUE(parse_ok({"h:", "/m"}).fs.prefetch);
  EXPECT_FALSE(parse_ok({"h:", "/m", "-o", "no_readahead"}).fs.prefetch);
  auto tuned = parse_ok({"h:", "/m", "-o", "prefetch_window=8,prefetch_budget=64"});
  EXPECT_EQ(tuned.fs.prefetch_max_window, 8ull << 20);
  EXPECT_EQ(tuned.fs.prefetch_budget, 64ull << 20);
  EXPECT_FALSE(parse_ok({"h:", "/m", "-o", "prefetch_budget=0"}).fs.prefetch);
  EXPECT_FALSE(parse({"h:", "/m", "-o", "prefetch_window=0"}));
}

TEST(SftpfsOptions, MemoryBudgets) {
  CommandLine defaults = parse_ok({"h:", "/m"});
  EXPECT_EQ(defaults.fs.prefetch_budget, 96ull << 20);
  EXPECT_EQ(defaults.fs.write_behind_budget, 64ull << 20);
  EXPECT_EQ(parse_ok({"h:", "/m", "-o", "write_behind_budget=16"}).fs.write_behind_budget, 16ull << 20);
  EXPECT_EQ(parse_ok({"h:", "/m", "-o", "write_behind_budget=0"}).fs.write_behind_budget, 0u);
  EXPECT_FALSE(parse({"h:", "/m", "-o", "write_behind_budget=lots"}));
  EXPECT_NE(help_text().find("-o write_behind_budget=MiB"), std::string::npos);
}

TEST(CommandLine, Status) {
  CommandLine cl = parse_ok({"--status", "/mnt/x"});
  EXPECT_EQ(cl.mode, Mode::status);
  EXPECT_EQ(cl.mountpoint, "/mnt/x");
  EXPECT_EQ(parse_error({"--status", "/mnt/x", "extra"}), "unexpected argument 'extra'; see sftpfs --help");
  EXPECT_EQ(parse_error({"--status", "/mnt/x", "--probe", "h"}), "use only one of --probe, --cat, --put and --status");
  EXPECT_NE(help_text().find("--status MOUNTPOINT"), std::string::npos);
}

TEST(SshfsOptions, AcceptedWithoutEffect) {
  parse_ok({"h:", "/m", "-o",
            "delay_connect,sshfs_sync,sync_readdir,max_write=65536,workaround=rename:nofstat,"
            "transform_symlinks,contain_symlinks,no_contain_symlinks,ssh_command=ssh -x,ssh_protocol=2,"
            "sftp_server=sftp,unreliable_append,writeback_cache=no,dcache_clean_interval=60,"
            "dcache_min_clean_interval=5,dcache_link_timeout=3"});
}

TEST(CacheOptions, TimeoutsAndSwitches) {
  auto cl = parse_ok({"h:", "/m", "-o", "dcache_timeout=5"});
  EXPECT_EQ(cl.fs.attr_timeout, 5000ms);
  EXPECT_EQ(cl.fs.dir_timeout, 5000ms);
  EXPECT_EQ(cl.fs.entry_timeout, 5000ms);

  // A specific timeout wins over the general one, in either order.
  auto specific = parse_ok({"h:", "/m", "-o", "attr_timeout=1.5,dcache_timeout=7,dcache_dir_timeout=3"});
  EXPECT_EQ(specific.fs.attr_timeout, 1500ms);
  EXPECT_EQ(specific.fs.dir_timeout, 3000ms);
  EXPECT_EQ(specific.fs.entry_timeout, 3000ms);

  auto old_names = parse_ok({"h:", "/m", "-o", "cache_timeout=9,cache_stat_timeout=2,cache_max_size=77"});
  EXPECT_EQ(old_names.fs.attr_timeout, 2000ms);
  EXPECT_EQ(old_names.fs.dir_timeout, 9000ms);
  EXPECT_EQ(old_names.fs.dir_cache_max_entries, 77u);

  auto fuse = parse_ok({"h:", "/m", "-o", "entry_timeout=0,negative_timeout=0.25,dcache_max_size=5"});
  EXPECT_EQ(fuse.fs.entry_timeout, 0ms);
  EXPECT_EQ(fuse.fs.negative_timeout, 250ms);
  EXPECT_EQ(fuse.fs.dir_cache_max_entries, 5u);

  EXPECT_FALSE(parse_ok({"h:", "/m", "-o", "dir_cache=no"}).fs.cache);
  EXPECT_FALSE(parse_ok({"h:", "/m", "-o", "cache=no"}).fs.cache);
  EXPECT_TRUE(parse_ok({"h:", "/m", "-o", "cache=no,dir_cache=yes"}).fs.cache);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "attr_timeout=-1"}).find("attr_timeout"), std::string::npos);
}

TEST(FuseOptions, Mapped) {
  auto cl = parse_ok({"h:", "/m", "-o",
                      "allow_other,default_permissions,uid=1001,gid=1002,umask=022,kernel_cache,auto_cache,"
                      "fsname=me@h:/x,subtype=sftp"});
  EXPECT_TRUE(cl.fs.allow_other);
  EXPECT_TRUE(cl.fs.default_permissions);
  EXPECT_EQ(*cl.fs.uid, 1001u);
  EXPECT_EQ(*cl.fs.gid, 1002u);
  EXPECT_EQ(*cl.fs.umask, 022u);
  EXPECT_TRUE(cl.fs.kernel_cache);
  EXPECT_TRUE(cl.fs.auto_cache);
  EXPECT_EQ(cl.fs.fsname, "me@h:/x");
  EXPECT_EQ(cl.fs.subtype, "sftp");
  EXPECT_FALSE(parse_ok({"h:", "/m", "-o", "auto_cache,noauto_cache"}).fs.auto_cache);
  EXPECT_TRUE(parse_ok({"h:", "/m", "-o", "allow_root"}).fs.allow_root);
}

TEST(FuseOptions, MountFlagsPassThrough) {
  auto cl = parse_ok({"h:", "/m", "-o", "ro,nodev,nosuid,noexec,noatime,auto_unmount"});
  std::vector<std::string> expected{"ro", "nodev", "nosuid", "noexec", "noatime", "auto_unmount"};
  EXPECT_EQ(cl.fs.extra_fuse_options, expected);
  // accepted, no effect
  auto quiet = parse_ok({"h:", "/m", "-o", "noforget,remember=5,no_rofd_flush,ac_attr_timeout=3,noauto,_netdev,user"});
  EXPECT_TRUE(quiet.fs.extra_fuse_options.empty());
  auto fstab = parse_ok({"h:", "/m", "-o", "x-systemd.automount,x-systemd.idle-timeout=60,comment=hello"});
  EXPECT_TRUE(fstab.fs.extra_fuse_options.empty());
  EXPECT_FALSE(parse({"h:", "/m", "-o", "y-thing"}));
}

TEST(FuseOptions, EscapedCommaInValue) {
  auto items = split_option_list("fsname=a\\,b,ro");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0], "fsname=a,b");
  EXPECT_EQ(items[1], "ro");
  EXPECT_EQ(parse_ok({"h:", "/m", "-o", "fsname=a\\,b"}).fs.fsname, "a,b");
}

TEST(Ownership, IdmapUser) {
  auto cl = parse_ok({"h:", "/m", "-o", "idmap=user"});
  EXPECT_EQ(cl.fs.idmap, fs::IdMap::user);
}

TEST(Ownership, IdmapFile) {
  TempDir dir;
  std::string uidfile = dir.write("uids", "# remote ids\nroot:1000\n\n  root:1001  \n");
  std::string gidfile = dir.write("gids", "root:2000\n");
  auto cl = parse_ok({"h:", "/m", "-o", "idmap=file,uidfile=" + uidfile + ",gidfile=" + gidfile + ",nomap=ignore"});
  EXPECT_EQ(cl.fs.idmap, fs::IdMap::file);
  std::map<uint32_t, uint32_t> uids{{1000, 0}, {1001, 0}}, gids{{2000, 0}};
  EXPECT_EQ(cl.fs.uid_map, uids);
  EXPECT_EQ(cl.fs.gid_map, gids);
  EXPECT_FALSE(cl.fs.nomap_error);
  EXPECT_TRUE(parse_ok({"h:", "/m", "-o", "idmap=file,uidfile=" + uidfile}).fs.nomap_error);  // sshfs's default
}

TEST(Ownership, IdmapFileErrors) {
  TempDir dir;
  EXPECT_NE(parse_error({"h:", "/m", "-o", "idmap=file"}).find("uidfile"), std::string::npos);
  std::string bad_line = dir.write("bad", "root\n");
  EXPECT_NE(parse_error({"h:", "/m", "-o", "idmap=file,uidfile=" + bad_line}).find("line 1"), std::string::npos);
  std::string unknown_user = dir.write("unknown", "no-such-user-sftpfs:5\n");
  EXPECT_NE(parse_error({"h:", "/m", "-o", "idmap=file,uidfile=" + unknown_user}).find("no-such-user-sftpfs"),
            std::string::npos);
  std::string world_writable = dir.write("ww", "root:1\n", 0666);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "idmap=file,uidfile=" + world_writable}).find("writable"),
            std::string::npos);
  EXPECT_NE(parse_error({"h:", "/m", "-o", "idmap=file,uidfile=/nonexistent/x"}).find("/nonexistent/x"),
            std::string::npos);
}

TEST(SshKeys, CaseInsensitiveAndFirstWins) {
  auto cl = parse_ok({"h:", "/m", "-o", "port=2200", "-o", "PORT=2300", "-o", "identityfile=~/a,IdentityFile=/b"});
  EXPECT_EQ(*cl.ssh.get("Port"), "2200");
  EXPECT_EQ(cl.ssh.all("IdentityFile"), (std::vector<std::string>{"~/a", "/b"}));
}

TEST(SshKeys, UserAloneIsAnFstabWordUserWithValueIsSsh) {
  EXPECT_FALSE(parse_ok({"h:", "/m", "-o", "user"}).ssh.has("User"));
  EXPECT_EQ(*parse_ok({"h:", "/m", "-o", "user=bob"}).ssh.get("User"), "bob");
}

TEST(SshKeys, CommandLineUserAndPortWin) {
  auto cl = parse_ok({"bob@h:", "/m", "-p", "2022", "-o", "User=alice,Port=1"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_TRUE(resolved) << resolved.error().message;
  EXPECT_EQ(resolved->session.user, "bob");
  EXPECT_EQ(resolved->session.port, 2022);
  EXPECT_EQ(resolved->session.host, "h");
}

TEST(SshKeys, ResolveEveryMappedKey) {
  auto cl = parse_ok({"srv:", "/m", "-o",
                      "HostName=%h.example.org,IdentityFile=~/.ssh/id_%r_%h,IdentityFile=/keys/%u,"
                      "StrictHostKeyChecking=accept-new,UserKnownHostsFile=~/kh1 /etc/kh2,"
                      "GlobalKnownHostsFile=/g,HostKeyAlias=alias,ServerAliveInterval=15,ServerAliveCountMax=4,"
                      "ConnectTimeout=7,Compression=yes,Ciphers=^aes128-ctr\\,aes256-ctr,IdentitiesOnly=yes,"
                      "BatchMode=yes,PasswordAuthentication=no,KbdInteractiveAuthentication=no,"
                      "LogLevel=DEBUG,CheckHostIP=no,User=carol"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_TRUE(resolved) << resolved.error().message;
  const ssh::SessionOptions& o = resolved->session;
  EXPECT_EQ(o.host, "srv.example.org");
  EXPECT_EQ(o.user, "carol");
  EXPECT_EQ(o.identity_files,
            (std::vector<std::string>{"/home/alice/.ssh/id_carol_srv.example.org", "/keys/alice"}));
  EXPECT_EQ(o.strict_host_key_checking, ssh::StrictHostKeyChecking::accept_new);
  EXPECT_EQ(o.user_known_hosts_files, (std::vector<std::string>{"/home/alice/kh1", "/etc/kh2"}));
  EXPECT_EQ(o.global_known_hosts_files, (std::vector<std::string>{"/g"}));
  EXPECT_EQ(o.host_key_alias, "alias");
  EXPECT_EQ(o.server_alive_interval, 15s);
  EXPECT_EQ(o.server_alive_count_max, 4);
  EXPECT_EQ(o.connect_timeout, 7000ms);
  EXPECT_TRUE(o.compression);
  EXPECT_EQ(o.ciphers, "aes128-ctr,aes256-ctr");
  EXPECT_TRUE(o.identities_only);
  EXPECT_TRUE(o.batch_mode);
  EXPECT_FALSE(o.password_authentication);
  EXPECT_FALSE(o.kbd_interactive_authentication);
}

TEST(SshKeys, Defaults) {
  auto cl = parse_ok({"h:", "/m"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_TRUE(resolved);
  EXPECT_EQ(resolved->session.user, "alice");
  EXPECT_EQ(resolved->session.port, 22);
  EXPECT_EQ(resolved->session.strict_host_key_checking, ssh::StrictHostKeyChecking::yes);
  EXPECT_EQ(resolved->session.user_known_hosts_files, (std::vector<std::string>{"/home/alice/.ssh/known_hosts"}));
  EXPECT_TRUE(resolved->session.identity_files.empty());
  EXPECT_TRUE(resolved->session.use_agent);
}

TEST(SshKeys, PreferredAuthenticationsSubset) {
  auto cl = parse_ok({"h:", "/m", "-o", "PreferredAuthentications=password"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_TRUE(resolved);
  EXPECT_TRUE(resolved->session.password_authentication);
  EXPECT_FALSE(resolved->session.kbd_interactive_authentication);
  EXPECT_FALSE(resolved->session.pubkey_authentication);  // neither the agent nor key files
}

TEST(SshKeys, IdentityAgent) {
  auto none = resolve_ssh_options(parse_ok({"h:", "/m", "-o", "IdentityAgent=none"}), no_files_env());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->session.use_agent);
  auto path = resolve_ssh_options(parse_ok({"h:", "/m", "-o", "IdentityAgent=~/agent.sock"}), no_files_env());
  ASSERT_TRUE(path);
  EXPECT_EQ(*path->agent_socket, "/home/alice/agent.sock");
}

TEST(SshKeys, ProxyCommandExpandsTokens) {
  auto cl = parse_ok({"bob@srv:", "/m", "-p", "2022", "-o",
                      "HostName=10.0.0.5,ProxyCommand=ssh -W %h:%p -l %r gw # %n 100%%"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_TRUE(resolved) << resolved.error().message;
  EXPECT_EQ(resolved->session.proxy_command, "ssh -W 10.0.0.5:2022 -l bob gw # srv 100%");
  EXPECT_EQ(resolved->session.proxy_jump, "");
  // The target keeps its own name and port (for known_hosts); the proxy only carries the bytes.
  EXPECT_EQ(resolved->session.host, "10.0.0.5");
  EXPECT_EQ(resolved->session.port, 2022);

  auto bad = resolve_ssh_options(parse_ok({"h:", "/m", "-o", "ProxyCommand=nc %q"}), no_files_env());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("ProxyCommand"), std::string::npos) << bad.error().message;
}

TEST(SshKeys, ProxyJumpWithConfigFileAndCommandLineChoices) {
  TempDir dir;
  std::string config = dir.write("config", "Host target\n  ProxyJump admin@gw:2200,gw2\n");
  auto cl = parse_ok({"target:", "/m", "-F", config, "-o",
                      "BatchMode=yes,UserKnownHostsFile=~/kh,StrictHostKeyChecking=accept-new,LogLevel=ERROR"});
  SshEnvironment env = no_files_env();
  env.config_files = {{config, false}};
  auto resolved = resolve_ssh_options(cl, env);
  ASSERT_TRUE(resolved) << resolved.error().message;
  const ssh::SessionOptions& o = resolved->session;
  EXPECT_EQ(o.proxy_jump, "admin@gw:2200,gw2");
  EXPECT_EQ(o.proxy_command, "");
  EXPECT_EQ(o.ssh_config_file, config);
  // Only the command line's prompting and host-key choices go to the jump ssh, as written.
  EXPECT_EQ(o.proxy_jump_options, (std::vector<std::string>{"BatchMode=yes", "StrictHostKeyChecking=accept-new",
                                                            "UserKnownHostsFile=~/kh"}));

  // Without -F and without such options, the jump ssh gets neither.
  auto plain = resolve_ssh_options(parse_ok({"h:", "/m", "-o", "ProxyJump=gw"}), no_files_env());
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(plain->session.proxy_jump, "gw");
  EXPECT_EQ(plain->session.ssh_config_file, "");
  EXPECT_TRUE(plain->session.proxy_jump_options.empty());
}

TEST(SshKeys, ProxyFirstValueWinsAndNoneTurnsItOff) {
  TempDir dir;
  std::string config = dir.write("config",
                                 "Host target\n  ProxyCommand ssh -W %h:%p file-gw\n"
                                 "Host other\n  ProxyJump jump-gw\n"
                                 "Host *\n  ProxyJump none\n");
  SshEnvironment env = no_files_env();
  env.config_files = {{config, false}};
  auto resolve = [&](std::vector<std::string> args) {
    auto r = resolve_ssh_options(parse_ok(args), env);
    EXPECT_TRUE(r) << r.error().message;
    return r ? r->session : ssh::SessionOptions{};
  };
  // From the file: the real value beats the later "Host *" none.
  EXPECT_EQ(resolve({"target:", "/m"}).proxy_command, "ssh -W target:22 file-gw");
  EXPECT_EQ(resolve({"other:", "/m"}).proxy_jump, "jump-gw");
  EXPECT_EQ(resolve({"third:", "/m"}).proxy_jump, "");
  // The command line comes first: its value wins over either key in the file, and none turns both off.
  auto cl_jump = resolve({"target:", "/m", "-o", "ProxyJump=cl-gw"});
  EXPECT_EQ(cl_jump.proxy_jump, "cl-gw");
  EXPECT_EQ(cl_jump.proxy_command, "");
  auto off = resolve({"target:", "/m", "-o", "ProxyJump=none"});
  EXPECT_EQ(off.proxy_jump, "");
  EXPECT_EQ(off.proxy_command, "");
  auto off2 = resolve({"other:", "/m", "-o", "ProxyCommand=none"});
  EXPECT_EQ(off2.proxy_jump, "");
  EXPECT_EQ(off2.proxy_command, "");
  // -o repeated: the first value wins, as in ssh.
  EXPECT_EQ(resolve({"h:", "/m", "-o", "ProxyJump=first", "-o", "ProxyJump=second"}).proxy_jump, "first");

  auto both = resolve_ssh_options(parse_ok({"h:", "/m", "-o", "ProxyJump=a,ProxyCommand=b"}), env);
  ASSERT_FALSE(both);
  EXPECT_NE(both.error().message.find("only one"), std::string::npos) << both.error().message;

  std::string both_file = dir.write("both", "Host *\n  ProxyJump a\n  ProxyCommand b\n");
  env.config_files = {{both_file, false}};
  auto ambiguous = resolve_ssh_options(parse_ok({"h:", "/m"}), env);
  ASSERT_FALSE(ambiguous);
  EXPECT_NE(ambiguous.error().message.find("both ProxyCommand and ProxyJump"), std::string::npos)
      << ambiguous.error().message;
}

TEST(SshKeys, AlgorithmListsGoToTheTransportAsWritten) {
  auto cl = parse_ok({"h:", "/m", "-o",
                      "KexAlgorithms=curve25519-sha256\\,ecdh-sha2-nistp256,HostKeyAlgorithms=-ecdsa*,"
                      "MACs=^hmac-sha2-512"});
  auto resolved = resolve_ssh_options(cl, no_files_env());
  ASSERT_TRUE(resolved) << resolved.error().message;
  EXPECT_EQ(resolved->session.kex, "curve25519-sha256,ecdh-sha2-nistp256");
  EXPECT_EQ(resolved->session.host_key_algorithms, "-ecdsa*");
  EXPECT_EQ(resolved->session.macs, "^hmac-sha2-512");
  auto none = resolve_ssh_options(parse_ok({"h:", "/m"}), no_files_env());
  ASSERT_TRUE(none);
  EXPECT_EQ(none->session.kex, "");
  EXPECT_EQ(none->session.host_key_algorithms, "");
  EXPECT_EQ(none->session.macs, "");
}

TEST(SshKeys, BadValues) {
  auto bad = [](const std::string& option) {
    auto r = resolve_ssh_options(parse_ok({"h:", "/m", "-o", option}), no_files_env());
    EXPECT_FALSE(r) << option;
    return r ? "" : r.error().message;
  };
  EXPECT_NE(bad("Port=70000").find("Port"), std::string::npos);
  EXPECT_NE(bad("StrictHostKeyChecking=maybe").find("StrictHostKeyChecking"), std::string::npos);
  EXPECT_NE(bad("Compression=perhaps").find("Compression"), std::string::npos);
  EXPECT_NE(bad("ConnectTimeout=soon").find("ConnectTimeout"), std::string::npos);
  EXPECT_NE(bad("IdentityFile=/k/%q").find("%q"), std::string::npos);
}

TEST(SshKeys, ConfigFileAppliesAfterCommandLine) {
  TempDir dir;
  std::string config = dir.write("config",
                                 "Host myalias\n"
                                 "  HostName 127.0.0.1\n"
                                 "  Port 2222\n"
                                 "  User dave\n"
                                 "  IdentityFile %d/.ssh/id_%h\n");
  auto cl = parse_ok({"myalias:", "/m", "-F", config, "-o", "Port=3333"});
  SshEnvironment env = no_files_env();
  env.config_files = {{config, false}};
  auto resolved = resolve_ssh_options(cl, env);
  ASSERT_TRUE(resolved) << resolved.error().message;
  EXPECT_EQ(resolved->session.host, "127.0.0.1");
  EXPECT_EQ(resolved->session.port, 3333);  // -o wins over the file
  EXPECT_EQ(resolved->session.user, "dave");
  EXPECT_EQ(resolved->session.identity_files, (std::vector<std::string>{"/home/alice/.ssh/id_127.0.0.1"}));

  SshEnvironment missing = no_files_env();
  missing.config_files = {{dir.path() + "/nope", false}};
  auto r = resolve_ssh_options(cl, missing);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("nope"), std::string::npos);
}

TEST(SshKeys, EnvironmentUsesDashF) {
  auto cl = parse_ok({"h:", "/m", "-F", "/x/cfg"});
  auto env = current_ssh_environment(cl);
  ASSERT_EQ(env.config_files.size(), 1u);
  EXPECT_EQ(env.config_files[0].first, "/x/cfg");
  EXPECT_FALSE(env.config_files[0].second);
  auto defaults = current_ssh_environment(parse_ok({"h:", "/m"}));
  ASSERT_EQ(defaults.config_files.size(), 2u);
  EXPECT_EQ(defaults.config_files[1].first, "/etc/ssh/ssh_config");
}

TEST(Modes, ProbeCatPut) {
  auto probe = parse_ok({"--probe", "u@host:2200"});
  EXPECT_EQ(probe.mode, Mode::probe);
  EXPECT_EQ(probe.remote.host, "host");
  auto resolved = resolve_ssh_options(probe, no_files_env());
  ASSERT_TRUE(resolved);
  EXPECT_EQ(resolved->session.port, 2200);
  EXPECT_EQ(resolved->session.user, "u");

  auto probe_p = parse_ok({"--probe", "host", "-p", "2201"});
  EXPECT_EQ(*probe_p.ssh.get("Port"), "2201");

  auto cat = parse_ok({"--cat", "h:/etc/hostname"});
  EXPECT_EQ(cat.mode, Mode::cat);
  EXPECT_EQ(cat.remote.path, "/etc/hostname");
  auto put = parse_ok({"--put", "h:/tmp/x", "-o", "IdentityFile=/k"});
  EXPECT_EQ(put.mode, Mode::put);
  EXPECT_FALSE(parse({"--cat", "h:"}));
  EXPECT_FALSE(parse({"--cat", "h:/x", "--put", "h:/y"}));
  EXPECT_FALSE(parse({"--probe", "h", "extra"}));
}

}  // namespace
}  // namespace sftpfs::cli
