// libFuzzer target for the text sftpfs reads from people and files: ssh_config text, remote specs,
// %-token expansion, word splitting, and whole command lines (one argument per input line).
// Nothing here may crash, hang or read out of bounds, whatever the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cli/options.hpp"
#include "cli/ssh_config.hpp"
#include "util/log.hpp"

using namespace sftpfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  log::set_level(log::Level::error);
  std::string_view text(reinterpret_cast<const char*>(data), size);

  cli::HostContext ctx{"fuzz.example", "alice", "/nonexistent-home", "bob"};
  cli::SshSettings settings;
  // Relative Include paths point at a folder that does not exist, so the input alone decides.
  (void)cli::parse_ssh_config_text(text, "fuzz", ctx, "/nonexistent-include-base", settings);

  (void)cli::split_words(text);
  cli::TokenValues tokens{"/home/a", "a", "h", "r", "n", "22", "l", "1000"};
  (void)cli::expand_tokens(text, tokens, "fuzz");
  (void)cli::parse_remote(text);
  (void)cli::parse_host_port(text);
  (void)cli::wildcard_match(text.substr(0, text.size() / 2), text.substr(text.size() / 2));

  // A command line: every input line is one argument (only parsing; nothing connects or mounts).
  std::vector<std::string> args;
  size_t start = 0;
  while (start <= text.size() && args.size() < 64) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    args.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  (void)cli::parse_command_line(args);
  return 0;
}
