// Going to the background the way a mount command should: fork before any thread exists, let the
// child connect and mount while the parent waits, and have the parent exit 0 only once the mount is
// there, or exit 1 with the child's one-line error. Nothing is left behind on failure.
#pragma once

#include <string>

#include "util/result.hpp"

namespace sftpfs::cli {

class Background {
 public:
  // Forks. Returns in the child only: the parent waits for the child's report and exits with it.
  // Must be called before any thread starts (threads do not survive fork).
  static Result<Background> start();

  Background(Background&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Background& operator=(Background&&) = delete;
  ~Background();

  // Child: the parent prints "sftpfs: <message>" and exits 1.
  void report_failure(const std::string& message);
  // Child, once mounted: becomes a daemon (new session, cwd /, stdio to /dev/null, logs to syslog) and
  // tells the parent, which exits 0.
  Status detach_and_report_ready();

 private:
  explicit Background(int fd) : fd_(fd) {}
  void send(const std::string& line);
  int fd_ = -1;  // write end of the report pipe
};

}  // namespace sftpfs::cli
