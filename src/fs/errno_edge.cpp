#include "fs/errno_edge.hpp"

#include <cerrno>

#include "sftp/protocol.hpp"

namespace sftpfs::fs {

int errno_edge(const Error& error) {
  switch (error.kind) {
    case Error::Kind::sftp_status: {
      // OK and EOF are not failures; a caller that passes them here has nothing better to say.
      if (error.code == sftp::SSH_FX_OK || error.code == sftp::SSH_FX_EOF) return EIO;
      int err = sftp::status_to_errno(error.code);
      return err > 0 ? err : EIO;
    }
    case Error::Kind::protocol: return EIO;        // the server broke the protocol; the data is suspect
    case Error::Kind::transport: return ENOTCONN;  // the connection is gone
    case Error::Kind::timeout: return ETIMEDOUT;   // no answer before the deadline
    case Error::Kind::auth: return EACCES;
    case Error::Kind::local: return error.code > 0 ? static_cast<int>(error.code) : EIO;
    case Error::Kind::unsupported: return EOPNOTSUPP;
    case Error::Kind::disconnected: return ENOTCONN;  // dropped, and reconnect is off or gave up
    case Error::Kind::unreachable: return EIO;        // waited reconnect_wait for the server in vain
  }
  return EIO;
}

}  // namespace sftpfs::fs
