// libFuzzer target: every parser a server's bytes reach. Besides "no crash, no out-of-bounds read" it
// checks one property: whatever ATTRS or NAME a parser accepts, our encoder writes back the same bytes.
#include <cstddef>
#include <cstdint>
#include <variant>

#include "sftp/protocol.hpp"
#include "sftp/wire.hpp"

namespace {

using namespace sftpfs::sftp;

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Re-encodes decoded attributes and checks they decode to the same value.
void check_attrs_round_trip(const Attrs& a) {
  Writer w(SSH_FXP_ATTRS);
  w.attrs(a);
  const Bytes packet = w.finish();
  Reader r(ByteView(packet).subspan(5));
  auto again = r.attrs();
  check(again.has_value() && *again == a && r.at_end());
}

void exercise_reply(ByteView input) {
  auto id = reply_id(input);
  auto reply = parse_reply(input);
  if (!reply) return;
  check(id.has_value() && *id == reply->id);  // a parseable reply always has a readable id
  if (const auto* attrs = std::get_if<AttrsReply>(&reply->body)) {
    check_attrs_round_trip(attrs->attrs);
  } else if (const auto* names = std::get_if<NameReply>(&reply->body)) {
    for (const NameEntry& e : names->names) check_attrs_round_trip(e.attrs);
  } else if (const auto* data = std::get_if<DataReply>(&reply->body)) {
    check(data->data.data() >= input.data() && data->data.data() + data->data.size() <= input.data() + input.size());
  } else if (const auto* ext = std::get_if<ExtendedReply>(&reply->body)) {
    (void)parse_limits(ext->payload);
    (void)parse_statvfs(ext->payload);
    (void)parse_users_groups(ext->payload);
  } else if (const auto* status = std::get_if<StatusReply>(&reply->body)) {
    check(status_name(status->code) != nullptr);
    (void)status_to_errno(status->code);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ByteView input(data, size);
  exercise_reply(input);
  (void)parse_version(input);
  (void)parse_limits(input);
  (void)parse_statvfs(input);
  (void)parse_users_groups(input);
  return 0;
}
