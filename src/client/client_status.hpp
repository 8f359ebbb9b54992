// What `sftpfs --status` shows of the engine: each connection's state and since when, reconnects,
// round-trip time, requests in flight and bytes moved. A snapshot; taking it never waits on the network.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sftpfs::client {

struct ConnectionStatus {
  enum class State { connected, reconnecting, stopped };
  State state = State::connected;
  std::chrono::system_clock::time_point since;  // when it entered `state`
  uint64_t reconnects = 0;                      // successful reconnects since mount
  uint64_t attempts = 0;                        // reconnect attempts in the current outage
  std::chrono::microseconds rtt{0};             // smoothed request round trip; 0 = not measured yet
  size_t in_flight = 0;                         // requests sent or queued, not yet answered
  size_t held = 0;                              // requests waiting for a reconnect
  size_t channels_open = 0;                     // SFTP channels open on the current connection
  size_t channels = 0;                          // of at most this many (-o max_channels)
  uint64_t bytes_sent = 0;                      // SFTP bytes, over all connections this slot had
  uint64_t bytes_received = 0;
  uint64_t bytes_received_in_place = 0;         // READ data received straight into its buffer (no copy)
  std::string last_error;                       // why it last dropped (empty if never)
};

struct ClientStatus {
  std::vector<ConnectionStatus> connections;
};

const char* state_name(ConnectionStatus::State state);

}  // namespace sftpfs::client
