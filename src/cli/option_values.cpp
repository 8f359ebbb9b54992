#include "cli/option_values.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace sftpfs::cli::detail {

Error usage_error(std::string message) { return Error::errno_error(EINVAL, std::move(message)); }

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// ---- value parsers: every one names the option in its error ----

Result<bool> parse_bool(std::string_view name, std::string_view value) {
  std::string v = lower(value);
  if (v == "yes" || v == "true" || v == "on" || v == "1") return true;
  if (v == "no" || v == "false" || v == "off" || v == "0") return false;
  return usage_error("bad value '" + std::string(value) + "' for " + std::string(name) + ": use yes or no");
}

Result<uint64_t> parse_unsigned(std::string_view name, std::string_view value, uint64_t max, int base) {
  uint64_t number = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number, base);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || number > max)
    return usage_error("bad value '" + std::string(value) + "' for " + std::string(name) + ": expected a number" +
                       (base == 8 ? " in octal" : "") + " up to " + std::to_string(max));
  return number;
}

Result<std::chrono::milliseconds> parse_seconds(std::string_view name, std::string_view value) {
  std::string text(value);
  char* end = nullptr;
  errno = 0;
  double seconds = std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || end != text.c_str() + text.size() || !std::isfinite(seconds) || seconds < 0 ||
      seconds > 365.0 * 86400)
    return usage_error("bad value '" + text + "' for " + std::string(name) + ": expected seconds, e.g. 20 or 0.5");
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000)));
}

}  // namespace sftpfs::cli::detail
