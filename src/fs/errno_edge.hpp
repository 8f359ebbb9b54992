// The FUSE edge: the one place an Error becomes an errno value for the kernel.
#pragma once

#include "util/result.hpp"

namespace sftpfs::fs {

// Never returns 0: every Error is a failure.
int errno_edge(const Error& error);

}  // namespace sftpfs::fs
