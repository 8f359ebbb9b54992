// libfuse's own messages, through one handler. With -d, libfuse prints every request and every reply;
// a reply carrying an errno (a lookup of a name that does not exist, an operation the filesystem leaves
// to the kernel such as getxattr) is an answer, not a failure of sftpfs, so its line says "errno N"
// instead of libfuse's "error: -N": "error" in the output then means something went wrong. libfuse's
// own error messages go to the logger (syslog once daemonized, where stderr is gone).
#pragma once

#include <string>
#include <string_view>

namespace sftpfs::fs {

// Installs the handler (fuse_set_log_func); call once, before the FUSE session is created.
void route_fuse_log();

// libfuse's debug line for a reply with an errno, reworded; other lines unchanged.
std::string reword_fuse_debug_line(std::string_view line);

}  // namespace sftpfs::fs
