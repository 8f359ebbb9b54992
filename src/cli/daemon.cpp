#include "cli/daemon.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "util/log.hpp"

namespace sftpfs::cli {
namespace {

constexpr const char kReady[] = "ready\n";
constexpr const char kFailed[] = "error ";

// The parent: waits for the child's one report, then exits the process with it.
[[noreturn]] void wait_for_child(int read_fd, pid_t child) {
  std::string report;
  char buffer[1024];
  for (;;) {
    ssize_t n = read(read_fd, buffer, sizeof buffer);
    if (n > 0) {
      report.append(buffer, static_cast<size_t>(n));
      if (report.size() > 64 * 1024) break;  // a report is one line; more is nonsense
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EOF: the child has closed its end (reported, detached, or died)
  }
  close(read_fd);
  if (report == kReady) std::exit(0);

  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (report.rfind(kFailed, 0) == 0) {
    std::string message = report.substr(sizeof kFailed - 1);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    std::fprintf(stderr, "sftpfs: %s\n", message.c_str());
  } else if (WIFSIGNALED(status)) {
    std::fprintf(stderr, "sftpfs: the mount process was killed by signal %d (%s) before mounting\n",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
  } else {
    std::fprintf(stderr, "sftpfs: the mount process ended (status %d) before mounting; run with -f to see why\n",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  std::exit(1);
}

}  // namespace

Result<Background> Background::start() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return Error::errno_error(errno, std::string("cannot create a pipe: ") + std::strerror(errno));
  std::fflush(nullptr);  // nothing buffered may be written twice
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return Error::errno_error(err, std::string("cannot fork: ") + std::strerror(err));
  }
  if (pid > 0) {
    close(fds[1]);
    wait_for_child(fds[0], pid);
  }
  close(fds[0]);
  return Background(fds[1]);
}

Background::~Background() {
  if (fd_ >= 0) close(fd_);
}

void Background::send(const std::string& line) {
  if (fd_ < 0) return;
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the parent is gone: nobody to tell
    p += n;
    left -= static_cast<size_t>(n);
  }
  close(fd_);
  fd_ = -1;
}

void Background::report_failure(const std::string& message) {
  std::string one_line = message;
  for (char& c : one_line)
    if (c == '\n' || c == '\r') c = ' ';
  send(kFailed + one_line + "\n");
}

Status Background::detach_and_report_ready() {
  if (setsid() < 0) return Error::errno_error(errno, std::string("setsid failed: ") + std::strerror(errno));
  if (chdir("/") != 0) return Error::errno_error(errno, std::string("chdir / failed: ") + std::strerror(errno));
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return Error::errno_error(errno, std::string("cannot open /dev/null: ") + std::strerror(errno));
  std::fflush(nullptr);
  log::use_syslog(true);  // before stderr goes away, so no message is lost
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) dup2(null_fd, fd);
  close(null_fd);
  send(kReady);
  return {};
}

}  // namespace sftpfs::cli
