#include "cli/probe.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <vector>

namespace sftpfs::cli {
namespace {

// Extension data is usually a short version string ("1", "2"); anything unprintable is shown in hex.
std::string printable(const std::string& data) {
  bool text = std::all_of(data.begin(), data.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
  if (text) return "\"" + data + "\"";
  std::string hex = "0x";
  char byte[3];
  for (unsigned char c : data) {
    std::snprintf(byte, sizeof byte, "%02x", c);
    hex += byte;
  }
  return hex;
}

std::string limit(uint64_t value) { return value == 0 ? std::string("not stated") : std::to_string(value); }

}  // namespace

int run_probe(client::Client& client, std::ostream& out) {
  const ssh::SessionInfo& info = client.session_info();
  const client::ServerFeatures& features = client.features();
  out << "server:            " << info.remote_banner << "\n"
      << "host key:          " << info.host_key_type << " " << info.host_key_sha256 << "\n"
      << "key exchange:      " << info.kex << "\n"
      << "cipher:            " << info.cipher_cs << " (client to server), " << info.cipher_sc
      << " (server to client)\n"
      << "mac:               " << info.mac_cs << " (client to server), " << info.mac_sc << " (server to client)\n"
      << "compression:       " << info.compression_cs << "\n"
      << "authenticated by:  " << info.auth_method << "\n"
      << "sftp version:      " << features.version.version << "\n"
      << "extensions:        " << features.version.extensions.size() << "\n";
  for (const auto& [name, data] : features.version.extensions)
    out << "  " << std::left << std::setw(34) << name << " " << printable(data) << "\n";
  const sftp::Limits& limits = features.limits;
  out << "limits:            "
      << (features.has(sftp::kExtLimits) ? "from limits@openssh.com" : "not stated (no limits@openssh.com): defaults apply") << "\n"
      << "  max packet length   " << limit(limits.max_packet_length) << "\n"
      << "  max read length     " << limit(limits.max_read_length) << "\n"
      << "  max write length    " << limit(limits.max_write_length) << "\n"
      << "  max open handles    " << limit(limits.max_open_handles) << "\n"
      << "used per request:  read " << features.max_read << " bytes, write " << features.max_write << " bytes\n"
      << "connections:       " << client.connection_count() << "\n";

  constexpr int kSamples = 9;
  std::vector<double> samples;
  for (int i = 0; i < kSamples; ++i) {
    auto start = std::chrono::steady_clock::now();
    auto attrs = client::wait_for<sftp::Attrs>([&](auto done) { client.stat(".", done); });
    auto elapsed = std::chrono::steady_clock::now() - start;
    if (!attrs) {
      out << "round trip:        STAT . failed: " << attrs.error().message << "\n";
      return 1;
    }
    samples.push_back(std::chrono::duration<double, std::milli>(elapsed).count());
  }
  std::sort(samples.begin(), samples.end());
  out << "round trip:        " << std::fixed << std::setprecision(3) << samples[kSamples / 2]
      << " ms (median of " << kSamples << " STATs of \".\"; min " << samples.front() << ", max " << samples.back()
      << ")\n";
  out.flush();
  return 0;
}

}  // namespace sftpfs::cli
