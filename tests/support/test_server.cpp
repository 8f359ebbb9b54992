#include "test_server.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <stdexcept>

namespace sftpfs::test {

namespace {
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}
}  // namespace

int run_shell(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string shell_output(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  pclose(pipe);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string sha256_file(const std::string& path) {
  std::string line = shell_output("sha256sum " + quote(path));
  return line.substr(0, line.find(' '));
}

TestServer::TestServer(std::vector<std::string> extra_config) {
  char tmpl[] = "/tmp/sftpfs-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::string cmd = std::string(SFTPFS_SOURCE_DIR) + "/tests/support/test-sshd start " + quote(dir_);
  for (const auto& line : extra_config) cmd += " " + quote(line);
  std::string port = shell_output(cmd);
  std::string pid = shell_output("cat " + quote(dir_ + "/sshd.pid") + " 2>/dev/null");
  if (port.empty() || pid.empty()) {
    run_shell("rm -rf " + quote(dir_));
    throw std::runtime_error("could not start the test sshd");
  }
  port_ = static_cast<uint16_t>(std::stoi(port));
  pid_ = std::stoi(pid);
}

void TestServer::kill_server() {
  if (pid_ <= 0) return;
  run_shell(std::string(SFTPFS_SOURCE_DIR) + "/tests/support/test-sshd kill " + quote(dir_));
  pid_ = -1;
}

TestServer::~TestServer() {
  if (pid_ > 0) {
    thaw_sessions();  // a stopped process would ignore the polite stop
    run_shell(std::string(SFTPFS_SOURCE_DIR) + "/tests/support/test-sshd stop " + quote(dir_));
    pid_ = -1;
  }
  run_shell("rm -rf " + quote(dir_));
}

std::vector<int> TestServer::session_pids() const {
  std::vector<int> pids;
  if (pid_ <= 0) return pids;
  std::vector<int> frontier{pid_};
  while (!frontier.empty()) {
    int parent = frontier.back();
    frontier.pop_back();
    std::string children = shell_output("pgrep -P " + std::to_string(parent) + " 2>/dev/null");
    size_t pos = 0;
    while (pos < children.size()) {
      size_t end = children.find('\n', pos);
      if (end == std::string::npos) end = children.size();
      int child = std::atoi(children.substr(pos, end - pos).c_str());
      if (child > 0) {
        pids.push_back(child);
        frontier.push_back(child);
      }
      pos = end + 1;
    }
  }
  return pids;
}

std::vector<int> TestServer::sftp_server_pids() const {
  std::vector<int> pids;
  for (int pid : session_pids()) {
    if (shell_output("cat /proc/" + std::to_string(pid) + "/comm 2>/dev/null") == "sftp-server") pids.push_back(pid);
  }
  return pids;
}

void TestServer::freeze_sessions() {
  for (int pid : session_pids()) ::kill(pid, SIGSTOP);
}

void TestServer::thaw_sessions() {
  for (int pid : session_pids()) ::kill(pid, SIGCONT);
}

std::string ensure_test_user() {
  const std::string user = "sftpfs-test";
  if (run_shell("id -u " + user + " >/dev/null 2>&1") != 0) {
    run_shell("useradd -m -s /bin/sh " + user + " >/dev/null 2>&1");
  }
  // useradd leaves the account locked ('!'), which sshd (UsePAM no) refuses even for keys: unlock it
  // without a usable password unless a test set one.
  if (shell_output("getent shadow " + user + " | cut -d: -f2").rfind('!', 0) == 0) {
    run_shell("usermod -p '*' " + user);
  }
  return user;
}

std::string TestServer::make_remote_dir(const std::string& name) {
  std::string path = dir_ + "/remote/" + name;
  run_shell("mkdir -p " + quote(path));
  return path;
}

}  // namespace sftpfs::test
