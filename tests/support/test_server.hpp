// A private sshd for one test process: started on a free 127.0.0.1 port with keys generated into a
// temp dir (tests/support/test-sshd), stopped by pid and its dir removed when the object goes away.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sftpfs::test {

class TestServer {
 public:
  // Extra sshd_config lines may be given (e.g. "KbdInteractiveAuthentication yes").
  explicit TestServer(std::vector<std::string> extra_config = {});
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }              // keys, config, logs live here
  std::string user_key() const { return dir_ + "/id_ed25519"; }  // authorized, no passphrase
  std::string known_hosts() const { return dir_ + "/known_hosts"; }  // records both host keys
  std::string authorized_keys() const { return dir_ + "/authorized_keys"; }
  int sshd_pid() const { return pid_; }
  // Kills sshd now (e.g. to test a server dying mid-transfer). Idempotent.
  void kill_server();

  // The per-connection processes below the listener (sshd sessions, sftp-server), by pid.
  std::vector<int> session_pids() const;
  // Stops (SIGSTOP) or resumes (SIGCONT) every session process: a server that stops answering without
  // closing the connection, as a black-holed network looks.
  void freeze_sessions();
  void thaw_sessions();
  // The sftp-server processes only (sshd itself keeps answering keepalives): a busy or stuck server.
  std::vector<int> sftp_server_pids() const;

  // A fresh empty directory on the "remote" side (same machine), removed with the server.
  std::string make_remote_dir(const std::string& name);

 private:
  std::string dir_;
  uint16_t port_ = 0;
  int pid_ = -1;
};

// A non-root local user for tests that need permissions enforced ("sftpfs-test"), created when
// absent, with the server's user key authorized (authorized_keys is shared by all users). Returns its name.
std::string ensure_test_user();

// Runs a shell command; returns its exit status (for test setup only).
int run_shell(const std::string& command);
// Captures a shell command's stdout (trailing newline trimmed).
std::string shell_output(const std::string& command);
// SHA-256 of a local file, hex.
std::string sha256_file(const std::string& path);

}  // namespace sftpfs::test
