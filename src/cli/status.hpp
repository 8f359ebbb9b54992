// `sftpfs --status MOUNTPOINT`: a running mount describes itself (connections, caches, memory) to
// whoever asks through an abstract unix socket named after its mount point. Abstract: no file to
// create, clean up or leave behind when the daemon is killed; the kernel drops the name with the
// socket. Only the mount's own user and root are answered (SO_PEERCRED).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <thread>

#include "client/client_status.hpp"
#include "fs/filesystem.hpp"
#include "util/result.hpp"

namespace sftpfs::cli {

// The socket's name (without the leading NUL) for an absolute, resolved mount point: "sftpfs-status:"
// + the path, or a hash of it when that would not fit in sockaddr_un.
std::string status_socket_name(const std::string& mountpoint);

// Everything one report shows; gathered by the daemon, formatted by format_status (unit-tested).
struct StatusSnapshot {
  std::string mountpoint;
  std::string source;  // user@host:path
  pid_t pid = 0;
  std::chrono::system_clock::time_point mounted_at, now;
  client::ClientStatus client;
  fs::Filesystem::CacheStats fs;
  uint64_t resident_bytes = 0;
};
std::string format_status(const StatusSnapshot& snapshot);

// The daemon's side: a thread answering each connection with report() and closing it.
class StatusServer {
 public:
  // Fails when the name is taken (another mount on the same path answers already) or sockets fail;
  // the mount then goes on without --status.
  static Result<std::unique_ptr<StatusServer>> start(const std::string& mountpoint, std::function<std::string()> report);
  ~StatusServer();  // stops and joins the thread; the name is free again at once
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

 private:
  StatusServer(int listen_fd, int stop_fd, std::function<std::string()> report);
  void run();
  void answer(int fd);

  const int listen_fd_;
  const int stop_fd_;  // eventfd: written by the destructor
  const std::function<std::string()> report_;
  std::thread thread_;
};

// The client's side: prints the report of the mount at `mountpoint` to `out`. Returns the exit code:
// 0, or 1 with "sftpfs: no sftpfs mount at M" (or why the report was refused) on `err`.
int print_status(const std::string& mountpoint, std::ostream& out, std::ostream& err);

}  // namespace sftpfs::cli
