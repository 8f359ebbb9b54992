#include "cli/ssh_config.hpp"

#include <glob.h>
#include <pwd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "util/log.hpp"

namespace sftpfs::cli {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool accumulates(const std::string& lowercase_key) {
  return lowercase_key == "identityfile" || lowercase_key == "certificatefile";
}

constexpr int kMaxIncludeDepth = 16;

std::string_view trim(std::string_view text) {
  size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

// Splits "Key value", "Key=value" and "Key = value" as ssh does.
bool split_key_value(std::string_view line, std::string_view& key, std::string_view& value) {
  size_t key_end = line.find_first_of(" \t=");
  key = line.substr(0, key_end);
  if (key.empty()) return false;
  if (key_end == std::string_view::npos) {
    value = {};
    return true;
  }
  std::string_view rest = line.substr(key_end);
  size_t i = rest.find_first_not_of(" \t");
  if (i != std::string_view::npos && rest[i] == '=') ++i;  // one '=' at most
  rest = i == std::string_view::npos ? std::string_view{} : rest.substr(i);
  value = trim(rest);
  return true;
}

// A comma-separated pattern list as Match criteria use it; '!' negates one pattern.
bool pattern_list_matches(std::string_view list, std::string_view text) {
  std::vector<std::string> patterns;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    if (comma > start) patterns.emplace_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return host_patterns_match(patterns, text);
}

// Evaluates a Match line's criteria. Criteria sftpfs cannot evaluate (exec, localnetwork, tagged,
// canonical) make the block not apply, with a debug line, so nothing is applied by guesswork.
Result<bool> match_applies(const std::vector<std::string>& words, const HostContext& ctx,
                           const SshSettings& so_far, const std::string& where) {
  if (words.empty()) return Error::errno_error(EINVAL, where + ": Match needs criteria (e.g. 'Match all')");
  bool result = true;
  for (size_t i = 0; i < words.size(); ++i) {
    std::string criterion = lower(words[i]);
    bool negate = false;
    if (!criterion.empty() && criterion[0] == '!') {
      negate = true;
      criterion.erase(0, 1);
    }
    if (criterion == "all") {
      if (negate) result = false;
      continue;
    }
    if (criterion == "final") {  // sftpfs reads the configuration once, which is the final pass
      if (negate) result = false;
      continue;
    }
    if (criterion == "canonical") {  // no host name canonicalization here
      if (!negate) result = false;
      continue;
    }
    if (i + 1 >= words.size())
      return Error::errno_error(EINVAL, where + ": Match " + words[i] + " needs an argument");
    const std::string& argument = words[++i];
    bool matched;
    if (criterion == "host") {
      const std::string* hostname = so_far.get("hostname");
      matched = pattern_list_matches(argument, hostname ? *hostname : ctx.original_host);
    } else if (criterion == "originalhost") {
      matched = pattern_list_matches(argument, ctx.original_host);
    } else if (criterion == "user") {
      const std::string* user = so_far.get("user");
      std::string remote = user ? *user : (ctx.remote_user.empty() ? ctx.local_user : ctx.remote_user);
      matched = pattern_list_matches(argument, remote);
    } else if (criterion == "localuser") {
      matched = pattern_list_matches(argument, ctx.local_user);
    } else {
      LOG_DEBUG("%s: Match %s is not evaluated by sftpfs; this Match block is skipped", where.c_str(),
                words[i - 1].c_str());
      matched = negate;  // so that the block does not apply either way
    }
    if (matched == negate) result = false;
  }
  return result;
}

Status include_files(const std::vector<std::string>& patterns, const HostContext& ctx,
                     const std::string& include_base, SshSettings& settings, int depth,
                     const std::string& where) {
  if (depth >= kMaxIncludeDepth)
    return Error::errno_error(ELOOP, where + ": Include nested too deeply (a loop?)");
  for (const std::string& raw : patterns) {
    std::string pattern = expand_tilde(raw, ctx.home);
    if (pattern.empty()) continue;
    if (pattern[0] != '/') pattern = include_base + "/" + pattern;
    glob_t matches{};
    int rc = glob(pattern.c_str(), 0, nullptr, &matches);
    std::unique_ptr<glob_t, void (*)(glob_t*)> owner(&matches, globfree);
    if (rc == GLOB_NOMATCH) {
      LOG_DEBUG("%s: Include %s matches no file", where.c_str(), pattern.c_str());
      continue;
    }
    if (rc != 0) return Error::errno_error(EIO, where + ": Include " + pattern + ": cannot expand");
    for (size_t i = 0; i < matches.gl_pathc; ++i) {
      std::string path = matches.gl_pathv[i];
      std::ifstream in(path);
      if (!in) {
        LOG_DEBUG("%s: Include %s: cannot read it; skipped", where.c_str(), path.c_str());
        continue;
      }
      std::stringstream text;
      text << in.rdbuf();
      Status s = parse_ssh_config_text(text.str(), path, ctx, include_base, settings, depth + 1);
      if (!s) return s;
    }
  }
  return {};
}

}  // namespace

bool SshSettings::add(std::string_view key, std::string value) {
  std::string k = lower(key);
  auto& values = values_[k];
  if (!values.empty() && !accumulates(k)) return false;
  values.push_back(std::move(value));
  return true;
}

const std::string* SshSettings::get(std::string_view key) const {
  auto it = values_.find(lower(key));
  if (it == values_.end() || it->second.empty()) return nullptr;
  return &it->second.front();
}

std::vector<std::string> SshSettings::all(std::string_view key) const {
  auto it = values_.find(lower(key));
  if (it == values_.end()) return {};
  return it->second;
}

bool wildcard_match(std::string_view pattern, std::string_view text) {
  // Iterative glob with backtracking to the last '*': linear in practice, no recursion.
  size_t p = 0, t = 0, star = std::string_view::npos, star_text = 0;
  auto same = [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  };
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || (pattern[p] != '*' && same(pattern[p], text[t])))) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_text = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++star_text;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool host_patterns_match(const std::vector<std::string>& patterns, std::string_view host) {
  bool matched = false;
  for (const std::string& pattern : patterns) {
    if (!pattern.empty() && pattern[0] == '!') {
      if (wildcard_match(std::string_view(pattern).substr(1), host)) return false;  // a negation vetoes
    } else if (wildcard_match(pattern, host)) {
      matched = true;
    }
  }
  return matched;
}

Result<std::vector<std::string>> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    if (i >= text.size()) break;
    std::string word;
    if (text[i] == '"') {
      size_t close = text.find('"', i + 1);
      if (close == std::string_view::npos)
        return Error::errno_error(EINVAL, "unbalanced quotes in '" + std::string(text) + "'");
      word = std::string(text.substr(i + 1, close - i - 1));
      i = close + 1;
    } else {
      size_t end = text.find_first_of(" \t", i);
      if (end == std::string_view::npos) end = text.size();
      word = std::string(text.substr(i, end - i));
      i = end;
    }
    words.push_back(std::move(word));
  }
  return words;
}

Result<std::string> expand_tokens(std::string_view text, const TokenValues& tokens, std::string_view what) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 1 >= text.size())
      return Error::errno_error(EINVAL, std::string(what) + " '" + std::string(text) + "' ends with a lone %");
    char token = text[++i];
    switch (token) {
      case '%': out += '%'; break;
      case 'd': out += tokens.home; break;
      case 'u': out += tokens.local_user; break;
      case 'h': out += tokens.host; break;
      case 'r': out += tokens.remote_user; break;
      case 'n': out += tokens.original_host; break;
      case 'p': out += tokens.port; break;
      case 'l': out += tokens.local_host; break;
      case 'i': out += tokens.uid; break;
      default:
        return Error::errno_error(EINVAL, std::string(what) + " '" + std::string(text) + "': unknown token %" +
                                              std::string(1, token));
    }
  }
  return out;
}

std::string expand_tilde(std::string_view path, const std::string& home) {
  if (path.empty() || path[0] != '~') return std::string(path);
  size_t slash = path.find('/');
  std::string_view user = path.substr(1, slash == std::string_view::npos ? std::string_view::npos : slash - 1);
  std::string rest = slash == std::string_view::npos ? std::string() : std::string(path.substr(slash));
  if (user.empty()) return home + rest;
  struct passwd entry {};
  struct passwd* found = nullptr;
  char buffer[4096];
  std::string name(user);
  if (getpwnam_r(name.c_str(), &entry, buffer, sizeof buffer, &found) == 0 && found)
    return std::string(found->pw_dir) + rest;
  return std::string(path);  // unknown user: left as written, so the error names what was written
}

Status parse_ssh_config_text(std::string_view text, const std::string& origin, const HostContext& ctx,
                             const std::string& include_base, SshSettings& settings, int depth) {
  bool active = true;  // lines before the first Host/Match apply to every host
  size_t line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t newline = text.find('\n', start);
    if (newline == std::string_view::npos) newline = text.size();
    std::string_view line = trim(text.substr(start, newline - start));
    start = newline + 1;
    ++line_number;
    if (line.empty() || line[0] == '#') continue;

    const std::string where = origin + ":" + std::to_string(line_number);
    std::string_view key_view, value_view;
    if (!split_key_value(line, key_view, value_view))
      return Error::errno_error(EINVAL, where + ": cannot parse '" + std::string(line) + "'");
    std::string key = lower(key_view);
    if (key == "host") {
      auto patterns = split_words(value_view);
      if (!patterns) return Error::errno_error(EINVAL, where + ": " + patterns.error().message);
      if (patterns->empty()) return Error::errno_error(EINVAL, where + ": Host needs a pattern");
      active = host_patterns_match(*patterns, ctx.original_host);
      continue;
    }
    if (key == "match") {
      auto words = split_words(value_view);
      if (!words) return Error::errno_error(EINVAL, where + ": " + words.error().message);
      auto applies = match_applies(*words, ctx, settings, where);
      if (!applies) return applies.take_error();
      active = *applies;
      continue;
    }
    if (!active) continue;
    if (key == "include") {
      auto patterns = split_words(value_view);
      if (!patterns) return Error::errno_error(EINVAL, where + ": " + patterns.error().message);
      Status s = include_files(*patterns, ctx, include_base, settings, depth, where);
      if (!s) return s;
      continue;
    }
    if (value_view.empty()) return Error::errno_error(EINVAL, where + ": " + std::string(key_view) + " needs a value");
    // Quotes around a single value are removed; lists stay as written and are split when used.
    std::string value(value_view);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"' &&
        value.find('"', 1) == value.size() - 1)
      value = value.substr(1, value.size() - 2);
    settings.add(key, std::move(value));
  }
  return {};
}

Status read_ssh_config(const std::string& path, const HostContext& ctx, const std::string& include_base,
                       bool missing_ok, SshSettings& settings) {
  std::ifstream in(path);
  if (!in) {
    int err = errno;
    if (err == ENOENT && missing_ok) return {};
    return Error::errno_error(err ? err : EIO, "cannot read ssh config file " + path + ": " + std::strerror(err ? err : EIO));
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_ssh_config_text(text.str(), path, ctx, include_base, settings, 0);
}

}  // namespace sftpfs::cli
