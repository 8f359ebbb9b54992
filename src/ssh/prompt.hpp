// The interactive SecretPrompt: the terminal, else SSH_ASKPASS, as ssh(1) decides.
#pragma once

#include "ssh/session.hpp"

namespace sftpfs::ssh {

// Asks on /dev/tty (echo off for secrets) when there is a controlling terminal; otherwise runs
// $SSH_ASKPASS with the prompt as its argument when it is set and DISPLAY/WAYLAND_DISPLAY is set.
// SSH_ASKPASS_REQUIRE=force or prefer uses askpass first, even with a terminal; never disables it.
// Returns nullopt when neither is available or the person cancels.
SecretPrompt make_interactive_prompt();

}  // namespace sftpfs::ssh
