// Errors as values: every fallible call returns Result<T>. errno is made from an Error in one place,
// at the FUSE edge (fs/errno_edge.hpp), and by the CLI for its exit messages.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace sftpfs {

struct Error {
  enum class Kind : uint8_t {
    sftp_status,  // the server answered SSH_FX_* `code`
    protocol,     // the server sent something malformed; the connection is failed
    transport,    // TCP/SSH failure; the connection is gone
    timeout,      // a deadline passed
    auth,         // authentication or host key refused
    local,        // a local failure; `code` is an errno value
    unsupported,  // the server lacks the extension or feature
    disconnected, // the connection dropped before the reply; the request may or may not have run
    unreachable,  // no connection could be had within the bound a call waits (reconnect_wait)
  };
  Kind kind = Kind::local;
  uint32_t code = 0;
  std::string message;

  static Error status(uint32_t sftp_code, std::string msg) { return {Kind::sftp_status, sftp_code, std::move(msg)}; }
  static Error protocol_error(std::string msg) { return {Kind::protocol, 0, std::move(msg)}; }
  static Error transport_error(std::string msg) { return {Kind::transport, 0, std::move(msg)}; }
  static Error timed_out(std::string msg) { return {Kind::timeout, 0, std::move(msg)}; }
  static Error auth_error(std::string msg) { return {Kind::auth, 0, std::move(msg)}; }
  static Error errno_error(int err, std::string msg) { return {Kind::local, static_cast<uint32_t>(err), std::move(msg)}; }
  static Error not_supported(std::string msg) { return {Kind::unsupported, 0, std::move(msg)}; }
  static Error disconnected_error(std::string msg) { return {Kind::disconnected, 0, std::move(msg)}; }
  static Error unreachable_error(std::string msg) { return {Kind::unreachable, 0, std::move(msg)}; }
};

// A value or an Error. Deliberately small: has_value/operator bool, value(), error().
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error err) : v_(std::in_place_index<1>, std::move(err)) {}  // NOLINT
  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }
  Error&& take_error() { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error err) : err_(std::move(err)), ok_(false) {}  // NOLINT
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }
  Error&& take_error() { return std::move(err_); }

 private:
  Error err_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace sftpfs
