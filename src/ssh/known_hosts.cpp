// known_hosts: which key types to ask for, and the verdict on the key the server showed.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

#include "ssh/internal.hpp"

namespace sftpfs::ssh::detail {

namespace {

struct KeyType {
  int knownhost_mask;   // LIBSSH2_KNOWNHOST_KEY_*
  int hostkey_type;     // LIBSSH2_HOSTKEY_TYPE_*
  const char* method;   // libssh2 host key method name (also the known_hosts key type word)
};

// In libssh2 1.10's own preference order; RSA host keys are only signed with SHA-1 by 1.10.
constexpr KeyType kKeyTypes[] = {
    {LIBSSH2_KNOWNHOST_KEY_ECDSA_256, LIBSSH2_HOSTKEY_TYPE_ECDSA_256, "ecdsa-sha2-nistp256"},
    {LIBSSH2_KNOWNHOST_KEY_ECDSA_384, LIBSSH2_HOSTKEY_TYPE_ECDSA_384, "ecdsa-sha2-nistp384"},
    {LIBSSH2_KNOWNHOST_KEY_ECDSA_521, LIBSSH2_HOSTKEY_TYPE_ECDSA_521, "ecdsa-sha2-nistp521"},
    {LIBSSH2_KNOWNHOST_KEY_ED25519, LIBSSH2_HOSTKEY_TYPE_ED25519, "ssh-ed25519"},
    {LIBSSH2_KNOWNHOST_KEY_SSHRSA, LIBSSH2_HOSTKEY_TYPE_RSA, "ssh-rsa"},
    {LIBSSH2_KNOWNHOST_KEY_SSHDSS, LIBSSH2_HOSTKEY_TYPE_DSS, "ssh-dss"},
};

const KeyType* key_type_for_hostkey(int hostkey_type) {
  for (const auto& k : kKeyTypes) {
    if (k.hostkey_type == hostkey_type) return &k;
  }
  return nullptr;
}

struct HostsDeleter {
  void operator()(LIBSSH2_KNOWNHOSTS* hosts) const { libssh2_knownhost_free(hosts); }
};
using HostsPtr = std::unique_ptr<LIBSSH2_KNOWNHOSTS, HostsDeleter>;

bool is_blank_or_comment(const std::string& line) {
  size_t i = line.find_first_not_of(" \t\r");
  return i == std::string::npos || line[i] == '#';
}

int check(LIBSSH2_KNOWNHOSTS* hosts, const std::string& name, const std::string& key_b64, int key_mask) {
  libssh2_knownhost* found = nullptr;
  // port -1: `name` already has the "[host]:port" form when it needs one (as ssh looks it up).
  return libssh2_knownhost_checkp(hosts, name.c_str(), -1, key_b64.c_str(), key_b64.size(),
                                  LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_BASE64 | key_mask,
                                  &found);
}

}  // namespace

struct KnownHosts::File {
  std::string path;
  bool user = false;  // a user file (accept-new writes to the first one)
  HostsPtr hosts;     // every usable line
  HostsPtr revoked;   // @revoked lines
  std::vector<std::pair<int, std::string>> lines;  // (line number, text) of usable lines, for reports
};

KnownHosts::KnownHosts(LIBSSH2_SESSION* session, const SessionOptions& options)
    : session_(session), options_(options) {
  if (!options.host_key_alias.empty()) {
    lookup_name_ = options.host_key_alias;
  } else if (options.port == 22) {
    lookup_name_ = options.host;
  } else {
    lookup_name_ = "[" + options.host + "]:" + std::to_string(options.port);
  }
  std::vector<std::pair<std::string, bool>> paths;
  if (options.user_known_hosts_files.empty()) {
    paths.emplace_back(home_dir() + "/.ssh/known_hosts", true);
  } else {
    for (const auto& p : options.user_known_hosts_files) paths.emplace_back(expand_tilde(p), true);
  }
  for (const auto& p : options.global_known_hosts_files) paths.emplace_back(expand_tilde(p), false);

  for (auto& [path, user] : paths) {
    File file;
    file.path = path;
    file.user = user;
    file.hosts.reset(libssh2_knownhost_init(session));
    file.revoked.reset(libssh2_knownhost_init(session));
    std::ifstream in(path);
    std::string line;
    int number = 0;
    // Line by line rather than libssh2_knownhost_readfile, which stops at the first line it cannot
    // parse (certificates, sk keys): one such line must not hide the rest of the file.
    while (in && std::getline(in, line)) {
      ++number;
      if (is_blank_or_comment(line)) continue;
      LIBSSH2_KNOWNHOSTS* target = file.hosts.get();
      std::string text = line;
      if (text[0] == '@') {
        if (text.rfind("@revoked", 0) != 0) continue;  // @cert-authority: libssh2 has no certificates
        text = text.substr(8);
        target = file.revoked.get();
      }
      text.erase(0, text.find_first_not_of(" \t"));
      if (libssh2_knownhost_readline(target, text.c_str(), text.size(), LIBSSH2_KNOWNHOST_FILE_OPENSSH) == 0 &&
          target == file.hosts.get()) {
        file.lines.emplace_back(number, text);
      }
    }
    files_.push_back(std::move(file));
  }
}

KnownHosts::~KnownHosts() = default;

std::vector<std::string> KnownHosts::recorded_key_methods() const {
  std::vector<std::string> methods;
  // A key that cannot be right ("AAAA") yields MISMATCH exactly when the host has an entry of that type.
  for (const auto& k : kKeyTypes) {
    for (const auto& file : files_) {
      if (check(file.hosts.get(), lookup_name_, "AAAA", k.knownhost_mask) == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
        methods.emplace_back(k.method);
        break;
      }
    }
  }
  return methods;
}

Status KnownHosts::verify(std::vector<std::string>& warnings, bool* disable_interactive_auth) {
  size_t key_len = 0;
  int hostkey_type = 0;
  const char* key = libssh2_session_hostkey(session_, &key_len, &hostkey_type);
  if (!key || key_len == 0) return Error::protocol_error("the server sent no host key");
  const KeyType* type = key_type_for_hostkey(hostkey_type);
  if (!type) return Error::not_supported("the server's host key type is not supported");
  const std::string key_b64 = base64_encode(reinterpret_cast<const uint8_t*>(key), key_len);
  std::string fingerprint = "unknown";
  if (const char* hash = libssh2_hostkey_hash(session_, LIBSSH2_HOSTKEY_HASH_SHA256)) {
    fingerprint = "SHA256:" + base64_encode(reinterpret_cast<const uint8_t*>(hash), 32, false);
  }
  const std::string shown = type->method + std::string(" key ") + fingerprint;

  for (const auto& file : files_) {
    if (check(file.revoked.get(), lookup_name_, key_b64, type->knownhost_mask) == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
      return Error::auth_error("the host key of " + lookup_name_ + " (" + shown + ") is marked @revoked in " +
                               file.path + "; refusing to connect");
    }
  }
  const File* mismatch_file = nullptr;
  for (const auto& file : files_) {
    int rc = check(file.hosts.get(), lookup_name_, key_b64, type->knownhost_mask);
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH) return {};
    if (rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH && !mismatch_file) mismatch_file = &file;
  }

  if (mismatch_file) {
    // Find the line to name in the report: the first entry for this host and key type.
    int line_number = 0;
    for (const auto& [number, text] : mismatch_file->lines) {
      HostsPtr one(libssh2_knownhost_init(session_));
      if (libssh2_knownhost_readline(one.get(), text.c_str(), text.size(), LIBSSH2_KNOWNHOST_FILE_OPENSSH) == 0 &&
          check(one.get(), lookup_name_, key_b64, type->knownhost_mask) == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
        line_number = number;
        break;
      }
    }
    std::string where = mismatch_file->path + (line_number ? ":" + std::to_string(line_number) : "");
    std::string message =
        "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The " + std::string(type->method) + " host key of " +
        lookup_name_ + " is now " + fingerprint + ", which differs from the one recorded in " + where +
        ". Someone could be eavesdropping on you (man-in-the-middle), or the host key was just changed. "
        "If you are sure the new key is right, remove the old entry with: ssh-keygen -f '" +
        mismatch_file->path + "' -R '" + lookup_name_ + "'";
    if (options_.strict_host_key_checking != StrictHostKeyChecking::no) return host_key_refused(message);
    warnings.push_back(message + " (continuing because StrictHostKeyChecking=no; password and "
                                 "keyboard-interactive authentication are disabled)");
    *disable_interactive_auth = true;
    return {};
  }

  if (options_.strict_host_key_checking == StrictHostKeyChecking::yes) {
    std::string files;
    for (const auto& f : files_) files += (files.empty() ? "" : ", ") + f.path;
    return host_key_refused("the host key of " + lookup_name_ + " is not known (" + shown + "; looked in " + files +
                             "). Verify the fingerprint, then either run 'ssh " +
                             (options_.port != 22 ? "-p " + std::to_string(options_.port) + " " : "") +
                             options_.host + "' once to accept it, or connect with -o StrictHostKeyChecking=accept-new");
  }

  // accept-new / no: record the key in the first user file, as ssh does.
  const File* user_file = nullptr;
  for (const auto& f : files_) {
    if (f.user) {
      user_file = &f;
      break;
    }
  }
  if (!user_file) {
    warnings.push_back("host key of " + lookup_name_ + " (" + shown + ") accepted but not recorded: no user known_hosts file");
    return {};
  }
  const std::string& path = user_file->path;
  if (auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    std::string dir = path.substr(0, slash);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) ::mkdir(dir.c_str(), 0700);
  }
  std::string entry = lookup_name_ + " " + type->method + " " + key_b64 + "\n";
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  bool written = false;
  if (fd >= 0) {
    // Keep the file well-formed if its last line lacks a newline.
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      char last = '\n';
      if (rfd >= 0) {
        if (::pread(rfd, &last, 1, st.st_size - 1) != 1) last = '\n';
        ::close(rfd);
      }
      if (last != '\n') entry.insert(entry.begin(), '\n');
    }
    written = ::write(fd, entry.data(), entry.size()) == static_cast<ssize_t>(entry.size());
    ::close(fd);
  }
  if (written) {
    warnings.push_back("Permanently added '" + lookup_name_ + "' (" + type->method + ") to " + path);
  } else {
    warnings.push_back("host key of " + lookup_name_ + " (" + shown + ") accepted but could not be added to " + path +
                       ": " + std::strerror(errno));
  }
  return {};
}

}  // namespace sftpfs::ssh::detail
