// One request as a link carries it across reconnects: how to build its packet (again, with the
// file's current handle), what to do with the reply, and whether it may be sent a second time.
#pragma once

#include <cstdint>
#include <functional>

#include "client/connection.hpp"
#include "client/remote_file.hpp"

namespace sftpfs::client {

enum class Replay {
  resend,   // idempotent (reads, writes at an offset, stat, setstat, open without CREAT|EXCL): send again
  recheck,  // may have run before the drop (mkdir, remove, rename, ...): send again, and if that fails,
            // `recheck` asks the server whether the first one did the work
  never,    // cannot be repeated (a READDIR: the listing position died with the handle)
};

struct Request {
  // Builds the packet; an error (the file was lost on a reconnect) fails the request unsent.
  std::function<Result<sftp::Bytes>()> build;
  ReplyCallback done;
  Replay replay = Replay::resend;
  // For Replay::recheck: called instead of `done` when a replayed request got an error reply.
  std::function<void(Result<sftp::Reply> reply, ReplyCallback done)> recheck;
  FileRef file;                   // the open file it uses, if any (never sent once the file is lost)
  size_t channel = 0;             // the connection's SFTP channel it goes on (a file's: file->channel)
  Payload payload;                // sent right behind the built packet (a WRITE's data), the same on a replay
  Sink sink;                      // where a READ's data is received, the same on a replay
  bool is_close = false;          // a CLOSE: a drop under it closed the handle anyway, so it succeeded
  Clock::time_point deadline{};   // passed to Connection::submit ({} = the request timeout)
  // Sent by a `recheck`: goes out at once while a replay waits for it, not behind the requests held
  // after the one it checks (which could change what it sees).
  bool part_of_recheck = false;

  // The link's bookkeeping.
  uint64_t sequence = 0;          // order of first submission: replays keep it
  int breaks = 0;                 // connections that dropped under it
  bool replayed = false;
  Clock::time_point give_up{};    // held for a reconnect until then
};

}  // namespace sftpfs::client
