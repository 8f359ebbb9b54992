// `sftpfs --probe`: what the server is and how it answers, for people and benchmarks.
#pragma once

#include <ostream>

#include "client/client.hpp"

namespace sftpfs::cli {

// Prints the SSH banner, negotiated algorithms, SFTP version, extensions with their data, limits and
// the round-trip time (median of several STATs of "."). Returns the process exit code.
int run_probe(client::Client& client, std::ostream& out);

}  // namespace sftpfs::cli
