#include "ssh/prompt.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

extern char** environ;

namespace sftpfs::ssh {

namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}

void strip_line_end(std::string& s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
}

std::optional<std::string> ask_terminal(int tty, const std::string& prompt, bool echo) {
  termios saved{};
  bool restore = false;
  if (!echo && ::tcgetattr(tty, &saved) == 0) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL);
    quiet.c_lflag |= ICANON;
    restore = ::tcsetattr(tty, TCSAFLUSH, &quiet) == 0;
  }
  if (::write(tty, prompt.data(), prompt.size()) < 0) {
    // The prompt could not be shown; still read, the person may know what is asked.
  }
  std::string answer;
  bool got_line = false;
  for (;;) {
    char c;
    ssize_t n = ::read(tty, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (c == '\n' || c == '\r') {
      got_line = true;
      break;
    }
    answer.push_back(c);
  }
  if (restore) {
    ::tcsetattr(tty, TCSAFLUSH, &saved);
    if (::write(tty, "\n", 1) < 0) {
      // Cosmetic only.
    }
  }
  if (!got_line && answer.empty()) return std::nullopt;  // EOF: cancelled
  return answer;
}

std::optional<std::string> ask_askpass(const std::string& program, const std::string& prompt, bool echo) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return std::nullopt;
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
  std::string arg0 = program;
  std::string arg1 = prompt;
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  // ssh tells askpass programs whether the answer is secret through SSH_ASKPASS_PROMPT.
  std::vector<std::string> env_storage;
  for (char** e = environ; e && *e; ++e) {
    if (std::strncmp(*e, "SSH_ASKPASS_PROMPT=", 19) != 0) env_storage.emplace_back(*e);
  }
  if (echo) env_storage.emplace_back("SSH_ASKPASS_PROMPT=confirm");
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(write_end.release());
  if (rc != 0) return std::nullopt;
  std::string out;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > 64 * 1024) break;  // no sane secret is this long
  }
  OPENSSL_cleanse(buf, sizeof buf);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    OPENSSL_cleanse(out.data(), out.size());
    return std::nullopt;  // cancelled
  }
  strip_line_end(out);
  return out;
}

}  // namespace

SecretPrompt make_interactive_prompt() {
  return [](const std::string& prompt, bool echo) -> std::optional<std::string> {
    // One question at a time, even if several connections authenticate at once.
    static std::mutex serialize;
    std::lock_guard lock(serialize);
    const char* askpass = std::getenv("SSH_ASKPASS");
    const char* require = std::getenv("SSH_ASKPASS_REQUIRE");
    const std::string mode = require ? require : "";
    const bool have_askpass = askpass && *askpass && mode != "never";
    if (have_askpass && (mode == "force" || mode == "prefer")) return ask_askpass(askpass, prompt, echo);
    Fd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
    if (tty.get() >= 0) return ask_terminal(tty.get(), prompt, echo);
    if (have_askpass && (env_set("DISPLAY") || env_set("WAYLAND_DISPLAY"))) {
      return ask_askpass(askpass, prompt, echo);
    }
    return std::nullopt;
  };
}

RememberedSecrets::~RememberedSecrets() {
  for (auto& [prompt, answer] : answers_) OPENSSL_cleanse(answer.data(), answer.size());
}

SecretPrompt RememberedSecrets::prompt() {
  return [this](const std::string& prompt, bool echo) { return answer(prompt, echo); };
}

void RememberedSecrets::stop_asking() {
  std::lock_guard<std::mutex> lock(mutex_);
  asking_ = false;
}

std::optional<std::string> RememberedSecrets::answer(const std::string& prompt, bool echo) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto known = std::find_if(answers_.begin(), answers_.end(), [&](const auto& a) { return a.first == prompt; });
  if (!asking_) return known == answers_.end() ? std::nullopt : std::optional<std::string>(known->second);
  // At mount time a person answers every prompt (a wrong passphrase is asked again): keep the last.
  auto answer = ask_ ? ask_(prompt, echo) : std::nullopt;
  if (!answer) return answer;
  if (known != answers_.end()) {
    OPENSSL_cleanse(known->second.data(), known->second.size());
    known->second = *answer;
  } else {
    answers_.emplace_back(prompt, *answer);
  }
  return answer;
}

}  // namespace sftpfs::ssh
