// The interactive SecretPrompt: the terminal, else SSH_ASKPASS, as ssh(1) decides.
#pragma once

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "ssh/session.hpp"

namespace sftpfs::ssh {

// Asks on /dev/tty (echo off for secrets) when there is a controlling terminal; otherwise runs
// $SSH_ASKPASS with the prompt as its argument when it is set and DISPLAY/WAYLAND_DISPLAY is set.
// SSH_ASKPASS_REQUIRE=force or prefer uses askpass first, even with a terminal; never disables it.
// Returns nullopt when neither is available or the person cancels.
SecretPrompt make_interactive_prompt();

}  // namespace sftpfs::ssh

namespace sftpfs::ssh {

// Answers typed at mount time, kept so a reconnect authenticates again without a person: in memory
// only, never logged or written, and only when reconnect is on. After stop_asking() (the mount is up
// and the terminal may be gone) only remembered answers are given; a prompt never seen gets none.
class RememberedSecrets {
 public:
  explicit RememberedSecrets(SecretPrompt ask) : ask_(std::move(ask)) {}
  ~RememberedSecrets();  // wipes the answers
  SecretPrompt prompt();
  void stop_asking();

 private:
  std::optional<std::string> answer(const std::string& prompt, bool echo);
  SecretPrompt ask_;
  std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> answers_;
  bool asking_ = true;
};

}  // namespace sftpfs::ssh
