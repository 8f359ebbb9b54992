// systemd's readiness protocol for a Type=notify service running `sftpfs -f`: one datagram with
// "READY=1" to the socket named by $NOTIFY_SOCKET, as sd_notify(3) sends it (no libsystemd needed).
#pragma once

#include <string_view>

namespace sftpfs::cli {

// Sends `state` (e.g. "READY=1") when $NOTIFY_SOCKET is set (a path, or "@name" in the abstract
// namespace), then unsets it so that no child (a ProxyJump ssh) sends anything in our name. Returns
// whether it was sent; without $NOTIFY_SOCKET there is nobody to tell.
bool notify_systemd(std::string_view state);

}  // namespace sftpfs::cli
