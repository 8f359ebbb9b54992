// ProxyCommand, ProxyJump and the algorithm preferences, against the private sshd. The proxies are real
// OpenSSH clients (ssh -W) through the same sshd acting as the jump host; every child is checked gone
// by pid afterwards.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libssh2.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "ssh/internal.hpp"
#include "ssh/session.hpp"
#include "session_options.hpp"
#include "sftp_init.hpp"
#include "test_server.hpp"

namespace sftpfs::ssh {
namespace {

using test::TestServer;

SessionOptions base_options(const TestServer& server) { return test::session_options(server); }

// An ssh client configuration that lets the jump host in with the test key, and nothing else.
std::string write_jump_config(const TestServer& server) {
  std::string path = server.dir() + "/jump_config";
  std::ofstream out(path);
  out << "Host 127.0.0.1\n"
      << "  IdentityFile " << server.user_key() << "\n"
      << "  IdentitiesOnly yes\n"
      << "  UserKnownHostsFile " << server.known_hosts() << "\n"
      << "  GlobalKnownHostsFile /dev/null\n"
      << "  BatchMode yes\n"
      << "  StrictHostKeyChecking yes\n"
      // A second name for the same server, for two-hop chains (ssh refuses a hop equal to its target).
      << "Host localhost\n"
      << "  HostKeyAlias [127.0.0.1]:" << server.port() << "\n"
      << "  IdentityFile " << server.user_key() << "\n"
      << "  IdentitiesOnly yes\n"
      << "  UserKnownHostsFile " << server.known_hosts() << "\n"
      << "  GlobalKnownHostsFile /dev/null\n"
      << "  BatchMode yes\n";
  return path;
}

// The equivalent of netcat to the target, through the jump host.
std::string ssh_w_command(const TestServer& server) {
  std::string port = std::to_string(server.port());
  return "ssh -F /dev/null -i '" + server.user_key() + "' -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile='" +
         server.known_hosts() + "' -o GlobalKnownHostsFile=/dev/null -p " + port + " -W 127.0.0.1:" + port +
         " root@127.0.0.1";
}

bool process_gone(int pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

using test_support::expect_sftp_init_answered;

TEST(Proxy, ProxyCommandCarriesTheSession) {
  TestServer server;
  auto o = base_options(server);
  o.proxy_command = ssh_w_command(server);
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  int pid = (*session)->proxy_pid();
  ASSERT_GT(pid, 0);
  EXPECT_FALSE(process_gone(pid));
  // The target's own host key was checked (same server, so the same fingerprint as direct).
  EXPECT_EQ((*session)->info().auth_method, "publickey " + server.user_key());
  expect_sftp_init_answered(**session);
  auto start = std::chrono::steady_clock::now();
  session->reset();
  // ssh -W leaves by itself once the socket closes: no SIGTERM grace period spent.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_TRUE(process_gone(pid)) << "proxy " << pid << " still exists (or is an unreaped zombie)";
}

TEST(Proxy, ProxyJumpThroughConfigFile) {
  TestServer server;
  auto o = base_options(server);
  o.proxy_jump = "root@127.0.0.1:" + std::to_string(server.port());
  o.ssh_config_file = write_jump_config(server);
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  int pid = (*session)->proxy_pid();
  ASSERT_GT(pid, 0);
  expect_sftp_init_answered(**session);
  session->reset();
  EXPECT_TRUE(process_gone(pid));
}

TEST(Proxy, ProxyJumpTwoHops) {
  TestServer server;
  auto o = base_options(server);
  std::string port = std::to_string(server.port());
  o.proxy_jump = "root@localhost:" + port + ",root@127.0.0.1:" + port;
  o.ssh_config_file = write_jump_config(server);
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  expect_sftp_init_answered(**session);
}

TEST(Proxy, ProxyJumpOptionsReachTheJumpSsh) {
  TestServer server;
  // No config file: the jump ssh learns the key and known_hosts only through -o options.
  auto o = base_options(server);
  o.proxy_jump = "root@127.0.0.1:" + std::to_string(server.port());
  o.ssh_config_file = "/dev/null";
  o.proxy_jump_options = {"BatchMode=yes", "IdentityFile=" + server.user_key(),
                          "UserKnownHostsFile=" + server.known_hosts(), "GlobalKnownHostsFile=/dev/null"};
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  expect_sftp_init_answered(**session);
}

TEST(Proxy, ProxyJumpRefusedByTheJumpHostSaysSo) {
  TestServer server;
  auto o = base_options(server);
  o.proxy_jump = "root@127.0.0.1:" + std::to_string(server.port());
  o.ssh_config_file = "/dev/null";
  // BatchMode and an unknown host key: the jump ssh gives up at once with status 255.
  o.proxy_jump_options = {"BatchMode=yes", "UserKnownHostsFile=/dev/null", "GlobalKnownHostsFile=/dev/null",
                          "StrictHostKeyChecking=yes"};
  auto start = std::chrono::steady_clock::now();
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_NE(session.error().message.find("ProxyJump '" + o.proxy_jump + "' exited with status 255 before the SSH handshake"),
            std::string::npos)
      << session.error().message;
}

TEST(Proxy, ProxyCommandThatExitsAtOnceFailsFastAndClearly) {
  TestServer server;
  auto o = base_options(server);
  o.proxy_command = "sh -c 'exit 3'";
  auto start = std::chrono::steady_clock::now();
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(session.error().kind, Error::Kind::transport);
  EXPECT_NE(session.error().message.find("ProxyCommand 'sh -c 'exit 3'' exited with status 3 before the SSH handshake"),
            std::string::npos)
      << session.error().message;
}

TEST(Proxy, StderrIsRelayedNotInherited) {
  // Our stderr goes to a file for the duration: what the proxy says must arrive there, through the relay.
  std::string log = ::testing::TempDir() + "/proxy_stderr_" + std::to_string(::getpid());
  int saved = ::dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  int file = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(file, 0);
  ::dup2(file, STDERR_FILENO);
  ::close(file);
  std::string our_stderr = [] {
    char buf[256] = {};
    ssize_t n = ::readlink("/proc/self/fd/2", buf, sizeof buf - 1);
    return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
  }();
  SessionOptions o;
  o.host = "127.0.0.1";
  o.connect_timeout = std::chrono::seconds(5);
  o.proxy_command = "sh -c 'ls -l /proc/$$/fd/2 >&2; echo proxy-says-hello >&2; exit 5'";
  auto session = Session::connect(o);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ASSERT_FALSE(session);
  EXPECT_NE(session.error().message.find("exited with status 5"), std::string::npos) << session.error().message;
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  ::unlink(log.c_str());
  // Connect returned only after the relay finished: nothing is still in flight.
  EXPECT_NE(text.find("proxy-says-hello"), std::string::npos) << text;
  EXPECT_NE(text.find("pipe:"), std::string::npos) << text;
  EXPECT_EQ(text.find(our_stderr), std::string::npos) << "the proxy holds our stderr itself: " << text;
}

TEST(Proxy, MissingProxyProgramIsNamed) {
  auto o = SessionOptions{};
  o.host = "127.0.0.1";
  o.proxy_command = "/nonexistent/proxy-program %h";
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_NE(session.error().message.find("exited with status 127"), std::string::npos) << session.error().message;
}

TEST(Proxy, SilentProxyTimesOutAndIsEnded) {
  std::string pid_file = ::testing::TempDir() + "/silent_proxy_" + std::to_string(::getpid());
  SessionOptions o;
  o.host = "127.0.0.1";
  o.user = "root";
  o.connect_timeout = std::chrono::seconds(1);
  // Never speaks and ignores EOF on stdin: only a signal ends it. $$ is the pid we own (sh execs).
  o.proxy_command = "sh -c 'echo $$ > " + pid_file + "; exec sleep 60'";
  auto start = std::chrono::steady_clock::now();
  auto session = Session::connect(o);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::timeout) << session.error().message;
  EXPECT_NE(session.error().message.find("through ProxyCommand"), std::string::npos) << session.error().message;
  // 1 s timeout + 0.5 s grace before SIGTERM.
  EXPECT_LT(took, std::chrono::seconds(4));
  std::ifstream in(pid_file);
  int pid = 0;
  ASSERT_TRUE(in >> pid);
  ::unlink(pid_file.c_str());
  ASSERT_GT(pid, 1);
  EXPECT_TRUE(process_gone(pid)) << "silent proxy " << pid << " survived";
}

TEST(Proxy, ProxyNoneMeansDirect) {
  TestServer server;
  auto o = base_options(server);
  o.proxy_command = "none";
  o.proxy_jump = "none";
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->proxy_pid(), -1);
}

TEST(ProxyJumpArgv, BuiltAsOpenSshDoes) {
  SessionOptions o;
  o.host = "target.example";
  o.port = 2222;
  o.proxy_jump = "alice@gw1.example:2201,[::1]:2202,ssh://bob@gw3.example";
  o.ssh_config_file = "/etc/my_config";
  o.proxy_jump_options = {"BatchMode=yes"};
  auto argv = detail::proxy_jump_argv(o);
  ASSERT_TRUE(argv) << argv.error().message;
  std::vector<std::string> expected{"ssh", "-F", "/etc/my_config", "-o", "BatchMode=yes", "-l", "bob", "-J",
                                    "alice@gw1.example:2201,[::1]:2202", "-W", "[target.example]:2222",
                                    "gw3.example"};
  EXPECT_EQ(*argv, expected);

  o = SessionOptions{};
  o.host = "::1";
  o.port = 22;
  o.proxy_jump = "gw";
  argv = detail::proxy_jump_argv(o);
  ASSERT_TRUE(argv);
  EXPECT_EQ(*argv, (std::vector<std::string>{"ssh", "-W", "[::1]:22", "gw"}));
}

TEST(ProxyJumpArgv, MalformedHopsAreRefused) {
  for (const char* bad : {"-oProxyCommand=evil", "gw:0", "gw:99999", "gw:", "@gw", "[::1", "gw,", "a b",
                          "user@-gw"}) {
    SessionOptions o;
    o.host = "h";
    o.proxy_jump = bad;
    auto argv = detail::proxy_jump_argv(o);
    EXPECT_FALSE(argv) << bad;
    if (!argv) {
      EXPECT_NE(argv.error().message.find("ProxyJump"), std::string::npos) << argv.error().message;
    }
  }
}

TEST(Algorithms, PreferencesAreNegotiated) {
  TestServer server;
  auto o = base_options(server);
  o.kex = "diffie-hellman-group14-sha256";
  o.macs = "hmac-sha2-512";
  o.ciphers = "chacha20-poly1305@openssh.com,aes256-ctr";  // the first is not in libssh2 1.10: dropped
  o.host_key_algorithms = "ssh-ed25519";
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  const SessionInfo& info = (*session)->info();
  EXPECT_EQ(info.kex, "diffie-hellman-group14-sha256");
  EXPECT_EQ(info.mac_cs, "hmac-sha2-512");
  EXPECT_EQ(info.mac_sc, "hmac-sha2-512");
  EXPECT_EQ(info.cipher_cs, "aes256-ctr");
  EXPECT_EQ(info.host_key_type, "ssh-ed25519");
}

TEST(Algorithms, RemovalAndWildcards) {
  TestServer server;
  auto o = base_options(server);
  o.host_key_algorithms = "-ecdsa-*";  // libssh2 1.10 would pick ECDSA first otherwise
  o.kex = "^ecdh-sha2-*";
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->info().host_key_type, "ssh-ed25519");
  EXPECT_EQ((*session)->info().kex.rfind("ecdh-sha2-nistp", 0), 0u) << (*session)->info().kex;
}

TEST(Algorithms, UnsupportedListNamesTheOption) {
  struct Case {
    std::string SessionOptions::*field;
    const char* option;
  };
  for (const Case& c : {Case{&SessionOptions::kex, "KexAlgorithms"}, Case{&SessionOptions::macs, "MACs"},
                        Case{&SessionOptions::host_key_algorithms, "HostKeyAlgorithms"},
                        Case{&SessionOptions::ciphers, "Ciphers"}}) {
    SessionOptions o;
    o.host = "127.0.0.1";
    o.port = 1;  // never reached: the preference is checked before any byte is sent
    o.proxy_command = "true";
    o.*c.field = "no-such-algorithm@example.com";
    auto session = Session::connect(o);
    ASSERT_FALSE(session);
    EXPECT_EQ(session.error().message.rfind(std::string(c.option) + "=no-such-algorithm@example.com", 0), 0u)
        << session.error().message;
    EXPECT_NE(session.error().message.find("libssh2"), std::string::npos) << session.error().message;
  }
}

}  // namespace
}  // namespace sftpfs::ssh
