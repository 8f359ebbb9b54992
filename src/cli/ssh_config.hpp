// ssh_config(5) reading: the settings that apply to one host, collected the way ssh collects them:
// command-line values first, then ~/.ssh/config (or -F), then /etc/ssh/ssh_config, and for each key
// the first value obtained wins. Only the key=value mechanics live here; what the keys mean for the
// transport is decided in options.cpp.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.hpp"

namespace sftpfs::cli {

// Settings collected for one host. Keys are compared without regard to case.
class SshSettings {
 public:
  // Records `value` for `key` unless an earlier value already won. Keys that ssh accumulates
  // (IdentityFile, CertificateFile) keep every value, in order. Returns whether the value was kept.
  bool add(std::string_view key, std::string value);
  // The winning value of `key`, or nullptr.
  const std::string* get(std::string_view key) const;
  // Every value of `key` (the single winner for ordinary keys; all for accumulating ones).
  std::vector<std::string> all(std::string_view key) const;
  bool has(std::string_view key) const { return get(key) != nullptr; }
  // (lowercase key, values) pairs, for debug output.
  const std::map<std::string, std::vector<std::string>>& entries() const { return values_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

// What Host and Match lines are matched against, and what %-tokens expand to.
struct HostContext {
  std::string original_host;  // the host as given on the command line (Host patterns match this)
  std::string local_user;     // %u, Match localuser
  std::string home;           // %d, ~, and the base of relative Include paths in user files
  std::string remote_user;    // %r and Match user, when already known (else the local user)
};

// Reads `path` and adds the settings that apply to ctx.original_host to `settings`. `include_base` is
// where relative Include paths point (~/.ssh for user files, /etc/ssh for the system file).
// A missing file is not an error when `missing_ok`; an unreadable or malformed one is.
Status read_ssh_config(const std::string& path, const HostContext& ctx, const std::string& include_base,
                       bool missing_ok, SshSettings& settings);

// Parses ssh_config text (for tests and for read_ssh_config). `origin` names it in error messages.
Status parse_ssh_config_text(std::string_view text, const std::string& origin, const HostContext& ctx,
                             const std::string& include_base, SshSettings& settings, int depth = 0);

// ssh's wildcard match: '*' any run of characters, '?' one character; case-insensitive, as ssh
// compares host names.
bool wildcard_match(std::string_view pattern, std::string_view text);
// A Host line's pattern list: matches when some pattern matches and no negated (!) pattern does.
bool host_patterns_match(const std::vector<std::string>& patterns, std::string_view host);

// Splits a value into words the way ssh does: whitespace separates, double quotes group.
Result<std::vector<std::string>> split_words(std::string_view text);

// Values for %-tokens: %d home, %u local user, %h remote host name, %r remote user, %n host as given,
// %p port, %l local host name, %i local uid, %% a percent sign.
struct TokenValues {
  std::string home, local_user, host, remote_user, original_host, port, local_host, uid;
};
// Expands %-tokens; an unknown token is an error naming it and `what` (e.g. "IdentityFile").
Result<std::string> expand_tokens(std::string_view text, const TokenValues& tokens, std::string_view what);
// Expands a leading "~" or "~/" to `home` (ssh's "~user/" form is resolved through the passwd database).
std::string expand_tilde(std::string_view path, const std::string& home);

}  // namespace sftpfs::cli
