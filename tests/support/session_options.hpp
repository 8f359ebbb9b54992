// SessionOptions that reach a TestServer as `user` with the server's generated key and known_hosts
// only: no agent, no prompts, no other key or known_hosts file of the machine.
#pragma once

#include <chrono>
#include <string>

#include "ssh/session.hpp"
#include "test_server.hpp"

namespace sftpfs::test {

inline ssh::SessionOptions session_options(const TestServer& server, const std::string& user = "root") {
  ssh::SessionOptions o;
  o.host = "127.0.0.1";
  o.port = server.port();
  o.user = user;
  o.connect_timeout = std::chrono::seconds(20);
  o.user_known_hosts_files = {server.known_hosts()};
  o.global_known_hosts_files = {};
  o.use_agent = false;
  o.identity_files = {server.user_key()};
  o.identities_only = true;
  o.password_authentication = false;
  o.kbd_interactive_authentication = false;
  o.batch_mode = true;
  return o;
}

}  // namespace sftpfs::test
