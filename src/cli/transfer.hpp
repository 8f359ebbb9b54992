// Whole-file transfers through the engine, for people and benchmarks: `sftpfs --cat` and `sftpfs --put`.
// With several connections the file is opened on each and its chunks are striped across them, so one
// transfer uses more than one core for the crypto.
#pragma once

#include <string>

#include "client/client.hpp"

namespace sftpfs::cli {

// Writes the remote file to standard output. Returns the process exit code; errors go to stderr.
int cat_remote_file(client::Client& client, const std::string& path);
// Writes standard input to the remote file (created or truncated). Returns the process exit code.
int put_remote_file(client::Client& client, const std::string& path);

}  // namespace sftpfs::cli
