// ssh::Session against a private OpenSSH 9.2 sshd: transport, host keys, every auth method.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libssh2.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>

#include "ssh/prompt.hpp"
#include "ssh/session.hpp"
#include "session_options.hpp"
#include "sftp_init.hpp"
#include "test_server.hpp"

extern char** environ;

namespace sftpfs::ssh {
namespace {

using test::run_shell;
using test::shell_output;
using test::TestServer;

// Sets (or unsets, with nullopt) an environment variable for a scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value->c_str(), 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

SessionOptions base_options(const TestServer& server) { return test::session_options(server); }

std::string fingerprint_of(const std::string& pub_file) {
  // "256 SHA256:xxxx comment (ECDSA)" -> "SHA256:xxxx"
  std::string line = shell_output("ssh-keygen -lf '" + pub_file + "'");
  auto start = line.find("SHA256:");
  return line.substr(start, line.find(' ', start) - start);
}

void authorize(const TestServer& server, const std::string& pub_file) {
  ASSERT_EQ(run_shell("cat '" + pub_file + "' >> '" + server.authorized_keys() + "'"), 0);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Session, Ed25519KeyConnectsAndFillsInfo) {
  TestServer server;
  auto session = Session::connect(base_options(server));
  ASSERT_TRUE(session) << session.error().message;
  const SessionInfo& info = (*session)->info();
  EXPECT_EQ(info.auth_method, "publickey " + server.user_key());
  EXPECT_NE(info.remote_banner.find("OpenSSH"), std::string::npos) << info.remote_banner;
  EXPECT_EQ(info.host_key_type, "ecdsa-sha2-nistp256");
  EXPECT_EQ(info.host_key_sha256, fingerprint_of(server.dir() + "/host_ecdsa.pub"));
  EXPECT_FALSE(info.kex.empty());
  EXPECT_FALSE(info.cipher_cs.empty());
  EXPECT_GE((*session)->socket_fd(), 0);
  EXPECT_NE((*session)->raw(), nullptr);
}

TEST(Session, HostKeyPreferenceFollowsKnownHosts) {
  TestServer server;
  // Only the ed25519 host key is recorded: libssh2 must be told to ask for it (1.10 prefers ECDSA).
  std::string kh = server.dir() + "/kh_ed25519";
  ASSERT_EQ(run_shell("grep ssh-ed25519 '" + server.known_hosts() + "' > '" + kh + "'"), 0);
  auto o = base_options(server);
  o.user_known_hosts_files = {kh};
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->info().host_key_type, "ssh-ed25519");
  EXPECT_EQ((*session)->info().host_key_sha256, fingerprint_of(server.dir() + "/host_ed25519.pub"));
}

TEST(Session, SftpChannelAnswersInit) {
  TestServer server;
  auto session = Session::connect(base_options(server));
  ASSERT_TRUE(session) << session.error().message;
  test_support::expect_sftp_init_answered(**session, 4u << 20);
}

TEST(Session, PassphraseKeyThroughAskpass) {
  TestServer server;
  const std::string key = server.dir() + "/id_secret";
  ASSERT_EQ(run_shell("ssh-keygen -q -t ed25519 -N 'correct horse' -f '" + key + "'"), 0);
  authorize(server, key + ".pub");
  const std::string askpass = server.dir() + "/askpass.sh";
  {
    std::ofstream(askpass) << "#!/bin/sh\necho \"$1\" >> '" << server.dir() << "/askpass.log'\necho 'correct horse'\n";
  }
  ASSERT_EQ(run_shell("chmod 700 '" + askpass + "'"), 0);
  ScopedEnv a("SSH_ASKPASS", askpass), r("SSH_ASKPASS_REQUIRE", "force"), d("DISPLAY", std::nullopt);
  auto o = base_options(server);
  o.identity_files = {key};
  o.batch_mode = false;
  o.prompt = make_interactive_prompt();
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->info().auth_method, "publickey " + key);
  EXPECT_NE(read_all(server.dir() + "/askpass.log").find("Enter passphrase for key '" + key + "'"), std::string::npos);
}

TEST(Session, WrongPassphraseIsReportedClearly) {
  TestServer server;
  const std::string key = server.dir() + "/id_secret";
  ASSERT_EQ(run_shell("ssh-keygen -q -t ed25519 -N 'right' -f '" + key + "'"), 0);
  authorize(server, key + ".pub");
  int asked = 0;
  auto o = base_options(server);
  o.identity_files = {key};
  o.batch_mode = false;
  o.prompt = [&](const std::string&, bool echo) -> std::optional<std::string> {
    EXPECT_FALSE(echo);
    ++asked;
    return std::string("wrong");
  };
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::auth);
  EXPECT_EQ(asked, 3);
  EXPECT_NE(session.error().message.find("incorrect passphrase"), std::string::npos) << session.error().message;
}

TEST(Session, EncryptedKeyInBatchModeSaysWhy) {
  TestServer server;
  const std::string key = server.dir() + "/id_secret";
  ASSERT_EQ(run_shell("ssh-keygen -q -t ed25519 -N 'right' -f '" + key + "'"), 0);
  auto o = base_options(server);
  o.identity_files = {key};
  o.prompt = [](const std::string&, bool) -> std::optional<std::string> {
    ADD_FAILURE() << "BatchMode must not prompt";
    return std::nullopt;
  };
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_NE(session.error().message.find("BatchMode"), std::string::npos) << session.error().message;
}

class RsaKeyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RsaKeyTest, RsaUserKeyWorksAgainstOpenSsh92) {
  TestServer server;
  const std::string key = server.dir() + "/id_rsa_test";
  const std::string format = GetParam();
  const bool encrypted = format.find("encrypted") != std::string::npos;
  std::string cmd = "ssh-keygen -q -t rsa -b 2048 -N '" + std::string(encrypted ? "pass-phrase" : "") + "' -f '" + key + "'";
  if (format.rfind("pem", 0) == 0) cmd += " -m PEM";
  ASSERT_EQ(run_shell(cmd), 0);
  authorize(server, key + ".pub");
  std::string head = shell_output("head -1 '" + key + "'");
  EXPECT_NE(head.find(format.rfind("pem", 0) == 0 ? "RSA PRIVATE KEY" : "OPENSSH PRIVATE KEY"), std::string::npos);
  auto o = base_options(server);
  o.identity_files = {key};
  if (encrypted) {
    o.batch_mode = false;
    o.prompt = [](const std::string&, bool) -> std::optional<std::string> { return std::string("pass-phrase"); };
  }
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message << "\nsshd log:\n" << read_all(server.dir() + "/sshd.log");
  EXPECT_EQ((*session)->info().auth_method, "publickey " + key);
}

INSTANTIATE_TEST_SUITE_P(Formats, RsaKeyTest,
                         ::testing::Values("pem", "openssh", "pem_encrypted", "openssh_encrypted"));

class AgentTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AgentTest, AgentKey) {
  TestServer server;
  std::string key = server.user_key();
  if (GetParam() == "rsa") {
    key = server.dir() + "/id_agent_rsa";
    ASSERT_EQ(run_shell("ssh-keygen -q -t rsa -b 2048 -N '' -f '" + key + "'"), 0);
    authorize(server, key + ".pub");
  }
  const std::string sock = server.dir() + "/agent.sock";
  std::string arg0 = "ssh-agent", arg1 = "-D", arg2 = "-a";
  std::string arg3 = sock;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), arg3.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t agent = -1;
  ASSERT_EQ(posix_spawnp(&agent, "ssh-agent", &actions, nullptr, argv, environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  struct AgentKiller {
    pid_t pid;
    ~AgentKiller() {
      ::kill(pid, SIGTERM);
      int status;
      ::waitpid(pid, &status, 0);
    }
  } killer{agent};
  for (int i = 0; i < 100 && ::access(sock.c_str(), F_OK) != 0; ++i) ::usleep(20000);
  ASSERT_EQ(::access(sock.c_str(), F_OK), 0) << "ssh-agent did not create its socket";
  ASSERT_EQ(run_shell("SSH_AUTH_SOCK='" + sock + "' ssh-add -q '" + key + "' 2>/dev/null"), 0);

  ScopedEnv env("SSH_AUTH_SOCK", sock);
  ScopedEnv home("HOME", server.dir());  // no ~/.ssh/id_* to fall back on
  auto o = base_options(server);
  o.use_agent = true;
  o.identity_files.clear();
  o.identities_only = false;
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->info().auth_method, "agent");
}

INSTANTIATE_TEST_SUITE_P(KeyTypes, AgentTest, ::testing::Values("ed25519", "rsa"));

// The password user "sftpfs-test": created when absent, given a fresh random password, and held
// under an exclusive lock for the test's duration, since concurrently running tests (ctest -j) would
// otherwise change the password under each other.
class PasswordUser {
 public:
  PasswordUser() : lock_fd_(::open("/tmp/sftpfs-test-user.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX) != 0) return;
    if (run_shell("id sftpfs-test >/dev/null 2>&1") != 0 && run_shell("useradd -m -s /bin/sh sftpfs-test") != 0) return;
    std::random_device rd;
    std::string password = "Pw-";
    const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    for (int i = 0; i < 20; ++i) password += alphabet[rd() % (sizeof alphabet - 1)];
    if (run_shell("echo 'sftpfs-test:" + password + "' | chpasswd") == 0) password_ = password;
  }
  ~PasswordUser() {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
  }
  PasswordUser(const PasswordUser&) = delete;
  PasswordUser& operator=(const PasswordUser&) = delete;
  const std::string& password() const { return password_; }

 private:
  int lock_fd_;
  std::string password_;
};

TEST(Session, PasswordAuthentication) {
  PasswordUser user;
  const std::string password = user.password();
  ASSERT_FALSE(password.empty()) << "cannot create the test user";
  TestServer server;
  auto o = base_options(server);
  o.user = "sftpfs-test";
  o.identity_files = {};
  o.identities_only = true;
  o.password_authentication = true;
  o.password = password;
  ScopedEnv home("HOME", server.dir());
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->info().auth_method, "password");

  // Asked through the prompt when not given.
  o.password.reset();
  o.batch_mode = false;
  int asked = 0;
  o.prompt = [&](const std::string& prompt, bool echo) -> std::optional<std::string> {
    EXPECT_FALSE(echo);
    EXPECT_EQ(prompt, "sftpfs-test@127.0.0.1's password: ");
    ++asked;
    return password;
  };
  auto prompted = Session::connect(o);
  ASSERT_TRUE(prompted) << prompted.error().message;
  EXPECT_EQ(asked, 1);
}

TEST(Session, WrongPasswordIsAnAuthError) {
  PasswordUser user;
  const std::string password = user.password();
  ASSERT_FALSE(password.empty()) << "cannot create the test user";
  TestServer server;
  auto o = base_options(server);
  o.user = "sftpfs-test";
  o.identity_files = {};
  o.password_authentication = true;
  o.password = password + "x";
  ScopedEnv home("HOME", server.dir());
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::auth);
  EXPECT_NE(session.error().message.find("Permission denied for sftpfs-test@127.0.0.1"), std::string::npos)
      << session.error().message;
  EXPECT_NE(session.error().message.find("password: not accepted"), std::string::npos) << session.error().message;
}

TEST(Session, KeyboardInteractiveThroughPam) {
  PasswordUser user;
  const std::string password = user.password();
  ASSERT_FALSE(password.empty()) << "cannot create the test user";
  TestServer server({"UsePAM yes", "KbdInteractiveAuthentication yes", "PasswordAuthentication no"});
  auto o = base_options(server);
  o.user = "sftpfs-test";
  o.identity_files = {};
  o.kbd_interactive_authentication = true;
  o.batch_mode = false;
  int asked = 0;
  o.prompt = [&](const std::string& prompt, bool echo) -> std::optional<std::string> {
    EXPECT_FALSE(echo);
    EXPECT_NE(prompt.find("assword"), std::string::npos) << prompt;
    ++asked;
    return password;
  };
  ScopedEnv home("HOME", server.dir());
  auto session = Session::connect(o);
  if (!session && session.error().message.find("keyboard-interactive") == std::string::npos) {
    // tests/support/test-sshd writes "UsePAM no" before the extra lines and sshd keeps the first
    // value of a keyword, so the fixture cannot enable PAM (which kbd-interactive needs on Linux).
    GTEST_SKIP() << "the test sshd does not offer keyboard-interactive: " << session.error().message;
  }
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ((*session)->info().auth_method, "keyboard-interactive");
  EXPECT_EQ(asked, 1);
}

TEST(Session, UnauthorizedKeyIsAnAuthErrorNamingTheKey) {
  TestServer server;
  const std::string key = server.dir() + "/id_stranger";
  ASSERT_EQ(run_shell("ssh-keygen -q -t ed25519 -N '' -f '" + key + "'"), 0);
  auto o = base_options(server);
  o.identity_files = {key};
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::auth);
  EXPECT_NE(session.error().message.find(key + ": not accepted"), std::string::npos) << session.error().message;
  EXPECT_NE(session.error().message.find("IdentityFile"), std::string::npos);
}

TEST(Session, UnknownHostKeyRefusedWithFingerprint) {
  TestServer server;
  auto o = base_options(server);
  o.user_known_hosts_files = {server.dir() + "/empty_known_hosts"};
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::auth);
  const std::string& msg = session.error().message;
  EXPECT_NE(msg.find(fingerprint_of(server.dir() + "/host_ecdsa.pub")), std::string::npos) << msg;
  EXPECT_NE(msg.find("StrictHostKeyChecking=accept-new"), std::string::npos) << msg;
}

TEST(Session, AcceptNewRecordsTheKey) {
  TestServer server;
  const std::string kh = server.dir() + "/new_dir/known_hosts";
  auto o = base_options(server);
  o.user_known_hosts_files = {kh};
  o.strict_host_key_checking = StrictHostKeyChecking::accept_new;
  {
    auto session = Session::connect(o);
    ASSERT_TRUE(session) << session.error().message;
    ASSERT_FALSE((*session)->info().warnings.empty());
  }
  std::string content = read_all(kh);
  EXPECT_NE(content.find("[127.0.0.1]:" + std::to_string(server.port()) + " ecdsa-sha2-nistp256 "), std::string::npos)
      << content;
  EXPECT_EQ(shell_output("stat -c %a '" + kh + "'"), "600");
  // The file ssh-keygen can read agrees on the fingerprint.
  EXPECT_NE(shell_output("ssh-keygen -lf '" + kh + "'").find(fingerprint_of(server.dir() + "/host_ecdsa.pub")),
            std::string::npos);
  o.strict_host_key_checking = StrictHostKeyChecking::yes;
  auto again = Session::connect(o);
  ASSERT_TRUE(again) << again.error().message;
}

TEST(Session, ChangedHostKeyRefusedEvenWithAcceptNew) {
  TestServer server;
  const std::string other = server.dir() + "/other_host";
  ASSERT_EQ(run_shell("ssh-keygen -q -t ecdsa -N '' -f '" + other + "'"), 0);
  const std::string kh = server.dir() + "/changed_known_hosts";
  {
    std::ofstream out(kh);
    out << "# a comment line\n[127.0.0.1]:" << server.port() << " " << shell_output("cut -d' ' -f1,2 '" + other + ".pub'")
        << "\n";
  }
  auto o = base_options(server);
  o.user_known_hosts_files = {kh};
  for (auto mode : {StrictHostKeyChecking::yes, StrictHostKeyChecking::accept_new}) {
    o.strict_host_key_checking = mode;
    auto session = Session::connect(o);
    ASSERT_FALSE(session);
    EXPECT_EQ(session.error().kind, Error::Kind::auth);
    EXPECT_NE(session.error().message.find("CHANGED"), std::string::npos) << session.error().message;
    EXPECT_NE(session.error().message.find(kh + ":2"), std::string::npos) << session.error().message;
  }
  o.strict_host_key_checking = StrictHostKeyChecking::no;
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_FALSE((*session)->info().warnings.empty());
}

TEST(Session, HashedKnownHostsEntry) {
  TestServer server;
  const std::string kh = server.dir() + "/hashed_known_hosts";
  ASSERT_EQ(run_shell("cp '" + server.known_hosts() + "' '" + kh + "' && ssh-keygen -q -H -f '" + kh +
                      "' >/dev/null 2>&1"),
            0);
  ASSERT_EQ(read_all(kh).find("127.0.0.1"), std::string::npos) << "entries are not hashed";
  auto o = base_options(server);
  o.user_known_hosts_files = {kh};
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
}

TEST(Session, StrictHostKeyCheckingNoConnectsToUnknownHost) {
  TestServer server;
  auto o = base_options(server);
  o.user_known_hosts_files = {server.dir() + "/none_known_hosts"};
  o.strict_host_key_checking = StrictHostKeyChecking::no;
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
}

TEST(Session, HostKeyAlias) {
  TestServer server;
  const std::string kh = server.dir() + "/alias_known_hosts";
  ASSERT_EQ(run_shell("echo \"myalias $(cut -d' ' -f1,2 '" + server.dir() + "/host_ecdsa.pub')\" > '" + kh + "'"), 0);
  auto o = base_options(server);
  o.user_known_hosts_files = {kh};
  o.host_key_alias = "myalias";
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
  o.host_key_alias = "otheralias";
  EXPECT_FALSE(Session::connect(o));
}

bool ipv6_loopback_available() {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

TEST(Session, Ipv6Literal) {
  if (!ipv6_loopback_available()) GTEST_SKIP() << "::1 is not available on this machine";
  TestServer server({"ListenAddress ::1"});
  const std::string kh = server.dir() + "/v6_known_hosts";
  ASSERT_EQ(run_shell("echo \"[::1]:" + std::to_string(server.port()) + " $(cut -d' ' -f1,2 '" + server.dir() +
                      "/host_ecdsa.pub')\" > '" + kh + "'"),
            0);
  auto o = base_options(server);
  o.host = "::1";
  o.user_known_hosts_files = {kh};
  auto session = Session::connect(o);
  ASSERT_TRUE(session) << session.error().message;
}

// A free port: bind, read the port, close.
uint16_t unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(Session, ConnectionRefusedIsFastAndClear) {
  SessionOptions o;
  o.host = "127.0.0.1";
  o.port = unused_port();
  o.user = "root";
  o.connect_timeout = std::chrono::seconds(10);
  auto start = std::chrono::steady_clock::now();
  auto session = Session::connect(o);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::transport);
  EXPECT_NE(session.error().message.find("Connection refused"), std::string::npos) << session.error().message;
  EXPECT_LT(took, std::chrono::seconds(2));
}

TEST(Session, SilentServerTimesOut) {
  struct Listener {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ~Listener() { ::close(fd); }
  } listener;
  ASSERT_GE(listener.fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.fd, 4), 0);  // the kernel completes the handshake; nobody ever speaks
  socklen_t len = sizeof addr;
  ::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&addr), &len);
  SessionOptions o;
  o.host = "127.0.0.1";
  o.port = ntohs(addr.sin_port);
  o.user = "root";
  o.connect_timeout = std::chrono::seconds(1);
  auto start = std::chrono::steady_clock::now();
  auto session = Session::connect(o);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(session);
  EXPECT_EQ(session.error().kind, Error::Kind::timeout) << session.error().message;
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::milliseconds(2500));
}

TEST(Session, UnresolvableHost) {
  SessionOptions o;
  o.host = "no-such-host.invalid";
  o.connect_timeout = std::chrono::seconds(5);
  auto session = Session::connect(o);
  ASSERT_FALSE(session);
  EXPECT_NE(session.error().message.find("no-such-host.invalid"), std::string::npos);
}

}  // namespace
}  // namespace sftpfs::ssh
