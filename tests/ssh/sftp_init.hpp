// Sends SSH_FXP_INIT on a fresh sftp channel (blocking) and expects SSH_FXP_VERSION 3: proof that a
// session carries SFTP, for transport tests that have no client layer.
#pragma once

#include <gtest/gtest.h>
#include <libssh2.h>

#include <cstdint>

#include "ssh/session.hpp"

namespace sftpfs::ssh::test_support {

inline void expect_sftp_init_answered(Session& session, uint32_t window = 1u << 20) {
  auto channel = session.open_sftp_channel(window);
  ASSERT_TRUE(channel) << channel.error().message;
  LIBSSH2_SESSION* s = session.raw();
  libssh2_session_set_blocking(s, 1);
  libssh2_session_set_timeout(s, 10000);
  const unsigned char init[] = {0, 0, 0, 5, 1 /* SSH_FXP_INIT */, 0, 0, 0, 3};
  ASSERT_EQ(libssh2_channel_write(channel->get(), reinterpret_cast<const char*>(init), sizeof init),
            static_cast<ssize_t>(sizeof init));
  unsigned char header[9];
  size_t got = 0;
  while (got < sizeof header) {
    ssize_t n = libssh2_channel_read(channel->get(), reinterpret_cast<char*>(header) + got, sizeof header - got);
    ASSERT_GT(n, 0) << "channel read failed: " << n;
    got += static_cast<size_t>(n);
  }
  uint32_t length = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | header[3];
  EXPECT_GE(length, 5u);
  EXPECT_EQ(header[4], 2) << "expected SSH_FXP_VERSION";
  EXPECT_EQ(header[8], 3) << "expected SFTP version 3";
  libssh2_session_set_blocking(s, 0);
}

}  // namespace sftpfs::ssh::test_support
