#include "cli/transfer.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <future>
#include <iostream>
#include <vector>

namespace sftpfs::cli {

namespace {

using client::FileRef;
using client::wait_for;

// 1 MiB per logical read or write (the client splits it into requests of the server's size), and 32 of
// them in flight: 32 MiB covers the bandwidth-delay product of 200 MB/s at 150 ms.
constexpr uint32_t kChunk = 1u << 20;
constexpr size_t kWindow = 32;

std::string describe(const Error& error) {
  if (error.kind == Error::Kind::sftp_status) {
    return std::strerror(sftp::status_to_errno(error.code)) +
           (error.message.empty() ? std::string() : " (" + error.message + ")");
  }
  return error.message;
}

int fail(const std::string& path, const Error& error) {
  std::cerr << "sftpfs: " << path << ": " << describe(error) << "\n";
  return 1;
}

// Opens `path` once per connection; the first open decides success.
Result<std::vector<FileRef>> open_everywhere(client::Client& client, const std::string& path, uint32_t first_flags,
                                             uint32_t other_flags) {
  std::vector<FileRef> files;
  for (size_t i = 0; i < client.connection_count(); ++i) {
    uint32_t flags = i == 0 ? first_flags : other_flags;
    auto file = wait_for<FileRef>([&](auto cb) { client.open_on(i, path, flags, {}, cb); });
    if (!file) return file.take_error();
    files.push_back(std::move(*file));
  }
  return files;
}

Status close_all(client::Client& client, const std::vector<FileRef>& files) {
  Status first;
  for (const auto& file : files) {
    auto st = wait_for<void>([&](auto cb) { client.close(file, cb); });
    if (!st && first) first = st;
  }
  return first;
}

bool write_fully(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

size_t read_fully(int fd, uint8_t* data, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, data + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

}  // namespace

int cat_remote_file(client::Client& client, const std::string& path) {
  auto files = open_everywhere(client, path, sftp::SSH_FXF_READ, sftp::SSH_FXF_READ);
  if (!files) return fail(path, files.error());

  // Chunks are requested in order and written in order; chunk k goes to connection k mod N.
  std::deque<std::future<Result<sftp::Bytes>>> window;
  uint64_t next_offset = 0;
  size_t next_chunk = 0;
  bool end_seen = false;
  int exit_code = 0;
  auto request_more = [&] {
    while (!end_seen && window.size() < kWindow) {
      auto promise = std::make_shared<std::promise<Result<sftp::Bytes>>>();
      window.push_back(promise->get_future());
      const FileRef& file = (*files)[next_chunk++ % files->size()];
      client.read(file, next_offset, kChunk, [promise](Result<sftp::Bytes> r) { promise->set_value(std::move(r)); });
      next_offset += kChunk;
    }
  };
  request_more();
  while (!window.empty()) {
    auto chunk = window.front().get();
    window.pop_front();
    if (end_seen) continue;  // requested past the end: drain
    if (!chunk) {
      exit_code = fail(path, chunk.error());
      end_seen = true;
      continue;
    }
    if (!write_fully(STDOUT_FILENO, chunk->data(), chunk->size())) {
      std::cerr << "sftpfs: writing to standard output failed: " << std::strerror(errno) << "\n";
      exit_code = 1;
      end_seen = true;
      continue;
    }
    if (chunk->size() < kChunk) end_seen = true;  // the client returns a short chunk only at end of file
    request_more();
  }
  if (auto st = close_all(client, *files); !st && exit_code == 0) exit_code = fail(path, st.error());
  return exit_code;
}

int put_remote_file(client::Client& client, const std::string& path) {
  auto files = open_everywhere(client, path, sftp::SSH_FXF_WRITE | sftp::SSH_FXF_CREAT | sftp::SSH_FXF_TRUNC,
                               sftp::SSH_FXF_WRITE);
  if (!files) return fail(path, files.error());

  std::deque<std::future<Status>> window;
  uint64_t offset = 0;
  size_t chunk_index = 0;
  int exit_code = 0;
  auto settle_one = [&] {
    auto st = window.front().get();
    window.pop_front();
    if (!st && exit_code == 0) exit_code = fail(path, st.error());
  };
  for (;;) {
    sftp::Bytes chunk(kChunk);
    size_t got = read_fully(STDIN_FILENO, chunk.data(), chunk.size());
    if (got == 0) break;
    chunk.resize(got);
    auto promise = std::make_shared<std::promise<Status>>();
    window.push_back(promise->get_future());
    const FileRef& file = (*files)[chunk_index++ % files->size()];
    client.write(file, offset, std::move(chunk), [promise](Status st) { promise->set_value(std::move(st)); });
    offset += got;
    if (window.size() >= kWindow) settle_one();
    if (exit_code != 0) break;
  }
  while (!window.empty()) settle_one();
  // CLOSE answers only once the server has the data; its error is the last chance to report one.
  if (auto st = close_all(client, *files); !st && exit_code == 0) exit_code = fail(path, st.error());
  return exit_code;
}

}  // namespace sftpfs::cli
