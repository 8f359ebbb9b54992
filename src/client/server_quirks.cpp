#include "client/server_quirks.hpp"

#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "util/log.hpp"

namespace sftpfs::client {

namespace {

using sftp::Reply;

// OK, or the error a reply carries (a STATUS other than OK, anything else, or no reply).
Status status_of(Result<Reply>& reply) {
  if (!reply) return reply.take_error();
  if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) {
    if (status->code == sftp::SSH_FX_OK) return {};
    return Error::status(status->code, status->message.empty() ? sftp::status_name(status->code) : status->message);
  }
  return Error::protocol_error("unexpected reply to SYMLINK or REMOVE");
}

// READLINK's answer: the target, or nothing (no link there, or any error).
struct LinkSeen {
  std::optional<std::string> target;
  bool nothing_there = false;  // NO_SUCH_FILE: no name at all
};
LinkSeen link_of(Result<Reply>& reply) {
  LinkSeen seen;
  if (!reply) return seen;
  if (auto* name = std::get_if<sftp::NameReply>(&reply->body)) {
    if (name->names.size() == 1) seen.target = name->names.front().filename;
  } else if (auto* status = std::get_if<sftp::StatusReply>(&reply->body)) {
    seen.nothing_there = status->code == sftp::SSH_FX_NO_SUCH_FILE;
  }
  return seen;
}

bool draft(SymlinkOrder order) { return order == SymlinkOrder::link_first; }
SymlinkOrder other(SymlinkOrder order) {
  return order == SymlinkOrder::link_first ? SymlinkOrder::target_first : SymlinkOrder::link_first;
}
const char* order_name(SymlinkOrder order) {
  return order == SymlinkOrder::link_first ? "(linkpath, targetpath)" : "(targetpath, linkpath)";
}

// Two replies of requests sent back to back, handled together once both are in.
template <class F>
std::pair<ReplyCallback, ReplyCallback> both(F on_both) {
  struct State {
    std::mutex mutex;
    std::optional<Result<Reply>> first, second;
    F on_both;
    explicit State(F f) : on_both(std::move(f)) {}
  };
  auto state = std::make_shared<State>(std::move(on_both));
  auto settle = [state] {
    // Called with the mutex released; both are set.
    state->on_both(*state->first, *state->second);
  };
  auto a = [state, settle](Result<Reply> r) {
    bool ready;
    {
      std::lock_guard lock(state->mutex);
      state->first.emplace(std::move(r));
      ready = state->second.has_value();
    }
    if (ready) settle();
  };
  auto b = [state, settle](Result<Reply> r) {
    bool ready;
    {
      std::lock_guard lock(state->mutex);
      state->second.emplace(std::move(r));
      ready = state->first.has_value();
    }
    if (ready) settle();
  };
  return {a, b};
}

}  // namespace

ServerQuirks::ServerQuirks(const ServerFeatures& features) {
  if (features.version.extensions.count("symlink-order@rjk.greenend.org.uk"))
    learn(features.symlink_draft_order ? SymlinkOrder::link_first : SymlinkOrder::target_first);
}

void ServerQuirks::learn(SymlinkOrder order) {
  int expected = 0;
  if (symlink_order_.compare_exchange_strong(expected, static_cast<int>(order)))
    LOG_DEBUG("the server takes SYMLINK's arguments as %s", order_name(order));
}

void ServerQuirks::symlink(const Send& send, std::string target, std::string link_path,
                           std::function<void(Status)> done) {
  SymlinkOrder order = symlink_order();
  if (order != SymlinkOrder::unknown) {
    return send(sftp::build_symlink(0, target, link_path, draft(order)),
                [done = std::move(done)](Result<Reply> reply) { done(status_of(reply)); });
  }
  try_order(send, std::move(target), std::move(link_path), SymlinkOrder::target_first, true, std::move(done));
}

void ServerQuirks::try_order(Send send, std::string target, std::string link_path, SymlinkOrder order,
                             bool first_try, std::function<void(Status)> done) {
  auto [on_symlink, on_readlink] = both(
      [this, send, target, link_path, order, first_try, done](Result<Reply>& symlink_reply,
                                                                Result<Reply>& readlink_reply) {
        Status made = status_of(symlink_reply);
        LinkSeen seen = link_of(readlink_reply);
        if (made && seen.target) {  // a link at our name: this order is right
          learn(order);
          return done({});
        }
        if (made) {
          // Acknowledged, yet no link at our name: the server made `target` -> `link_path`. Undo it,
          // then make the link the other way round (now known).
          undo_reversed(send, target, link_path, [this, send, target, link_path, order, done](bool removed) {
            if (!removed) {
              return done(Error::protocol_error("the server acknowledged SYMLINK but made no link at " + link_path));
            }
            learn(other(order));
            symlink(send, target, link_path, done);
          });
          return;
        }
        // Failed. With nothing at our name, the other order may be the reason (it makes the link at
        // the target's name, which may exist): try it once, and keep the first error if that fails too.
        if (first_try && seen.nothing_there && symlink_order() == SymlinkOrder::unknown) {
          return try_order(send, target, link_path, other(order), false,
                           [this, send, target, link_path, made, done](Status second) mutable {
                             if (second) return done({});
                             done(std::move(made));
                           });
        }
        done(std::move(made));
      });
  send(sftp::build_symlink(0, target, link_path, draft(order)), std::move(on_symlink));
  send(sftp::build_readlink(0, link_path), std::move(on_readlink));
}

void ServerQuirks::undo_reversed(Send send, std::string target, std::string link_path,
                                 std::function<void(bool removed)> done) {
  // Remove only what we made: a link at `target` that points at `link_path`.
  send(sftp::build_readlink(0, target), [send, target, link_path, done](Result<Reply> reply) {
    LinkSeen seen = link_of(reply);
    if (!seen.target || *seen.target != link_path) return done(false);
    send(sftp::build_remove(0, target), [done](Result<Reply> removed) { done(static_cast<bool>(status_of(removed))); });
  });
}

bool server_makes_symlink_targets_absolute(const std::string& remote_banner) {
  return remote_banner.rfind("SSH-2.0-mod_sftp", 0) == 0;
}

}  // namespace sftpfs::client
