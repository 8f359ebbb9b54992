// Small parsers shared by the command line and ssh option code: each names the option in its error.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.hpp"

namespace sftpfs::cli::detail {

Error usage_error(std::string message);  // EINVAL with a message for the user
std::string lower(std::string_view text);
bool iequals(std::string_view a, std::string_view b);
Result<bool> parse_bool(std::string_view name, std::string_view value);  // yes/no, true/false, on/off, 1/0
Result<uint64_t> parse_unsigned(std::string_view name, std::string_view value, uint64_t max, int base = 10);
// Seconds, fractions allowed (FUSE's timeouts are doubles).
Result<std::chrono::milliseconds> parse_seconds(std::string_view name, std::string_view value);

}  // namespace sftpfs::cli::detail
