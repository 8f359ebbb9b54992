#include "fs/fuse_log.hpp"

#include <gtest/gtest.h>

namespace sftpfs::fs {
namespace {

TEST(FuseLog, AReplyWithAnErrnoIsNotCalledAnError) {
  EXPECT_EQ(reword_fuse_debug_line("   unique: 10, error: -38 (Function not implemented), outsize: 16\n"),
            "   unique: 10, errno 38 (Function not implemented), outsize: 16\n");
  EXPECT_EQ(reword_fuse_debug_line("   unique: 4, error: -2 (No such file or directory), outsize: 16\n"),
            "   unique: 4, errno 2 (No such file or directory), outsize: 16\n");
}

TEST(FuseLog, OtherLinesAreUnchanged) {
  for (const char* line : {"unique: 12, opcode: WRITE (16), nodeid: 2, insize: 2308, pid: 14991\n",
                           "   unique: 12, success, outsize: 24\n", "INIT: 7.45\n", "fuse: reading device: error\n"})
    EXPECT_EQ(reword_fuse_debug_line(line), line);
}

}  // namespace
}  // namespace sftpfs::fs
