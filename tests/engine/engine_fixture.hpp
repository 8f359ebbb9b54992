// An engine test: a private sshd and a Client connected to it as root, with a scratch directory on the
// server side (a local path, so results are checked with ordinary syscalls).
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "client/client.hpp"
#include "session_options.hpp"
#include "test_server.hpp"

namespace sftpfs::test {

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ssh::global_init();
    server_ = std::make_unique<TestServer>();
    dir_ = server_->make_remote_dir("engine");
  }
  void TearDown() override {
    client_.reset();  // close before the server goes
    server_.reset();
  }

  client::Client& connect(size_t connections = 1, client::ConnectionOptions connection = {},
                          client::LinkOptions link = {}) {
    client::ClientOptions options;
    options.connections = connections;
    options.connection = connection;
    options.link = link;
    auto client = client::Client::connect(session_options(*server_), options);
    if (!client) {
      ADD_FAILURE() << "connect failed: " << client.error().message;
      throw std::runtime_error("connect failed");
    }
    client_ = std::move(*client);
    return *client_;
  }

  static client::LinkOptions no_reconnect() {
    client::LinkOptions link;
    link.reconnect = false;
    return link;
  }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  static std::string read_local(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }
  static void write_local(const std::string& file, const std::string& content) {
    std::ofstream(file, std::ios::binary) << content;
  }

  std::unique_ptr<TestServer> server_;
  std::unique_ptr<client::Client> client_;
  std::string dir_;
};

}  // namespace sftpfs::test
