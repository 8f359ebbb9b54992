// User authentication: agent, identity files (with passphrases), password, keyboard-interactive.
// Every attempt is remembered so a final refusal says what was tried and what to do.
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "ssh/internal.hpp"
#include "ssh/private_key.hpp"

namespace sftpfs::ssh::detail {

namespace {

constexpr int kPassphraseTries = 3;
constexpr int kPasswordTries = 3;

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool method_offered(const std::string& methods, const char* name) {
  size_t start = 0;
  while (start <= methods.size()) {
    size_t comma = methods.find(',', start);
    if (comma == std::string::npos) comma = methods.size();
    if (methods.compare(start, comma - start, name) == 0) return true;
    start = comma + 1;
  }
  return false;
}

std::string blob_key_type(const unsigned char* blob, size_t len) {
  if (len < 4) return {};
  uint32_t n = (uint32_t{blob[0]} << 24) | (uint32_t{blob[1]} << 16) | (uint32_t{blob[2]} << 8) | uint32_t{blob[3]};
  if (n > len - 4) return {};
  return std::string(reinterpret_cast<const char*>(blob + 4), n);
}

// Wrong-passphrase results differ by libssh2 API (-19, -16, -48, -14): all mean "could not use the key".
bool is_key_unusable_code(int rc) {
  return rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED || rc == LIBSSH2_ERROR_FILE ||
         rc == LIBSSH2_ERROR_KEYFILE_AUTH_FAILED || rc == LIBSSH2_ERROR_PROTO;
}

struct AgentDeleter {
  void operator()(LIBSSH2_AGENT* agent) const {
    libssh2_agent_disconnect(agent);
    libssh2_agent_free(agent);
  }
};

// Signs for libssh2_userauth_publickey with our RSA key: rsa-sha2-256 instead of 1.10's SHA-1.
int rsa_sha2_sign(LIBSSH2_SESSION*, unsigned char** sig, size_t* sig_len, const unsigned char* data, size_t data_len,
                  void** abstract) {
  try {
    const auto* key = static_cast<const RsaKey*>(*abstract);
    auto blob = key->sign_sha256(data, data_len);
    if (!blob) return -1;
    // libssh2 frees the signature with its allocator, which is the default (free).
    auto* out = static_cast<unsigned char*>(std::malloc(blob->size()));
    if (!out) return -1;
    std::memcpy(out, blob->data(), blob->size());
    *sig = out;
    *sig_len = blob->size();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Signs with an RSA key held by ssh-agent, asking for rsa-sha2-256 (flag 2); libssh2 1.10's agent
// code only asks for SHA-1 signatures.
struct AgentRsaSigner {
  std::string socket_path;
  std::vector<uint8_t> key_blob;  // as the agent listed it ("ssh-rsa" ...)
};

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}
uint32_t get_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

bool write_all(int fd, const uint8_t* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}
bool read_all(int fd, uint8_t* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::read(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Returns the raw RSA signature from the agent's rsa-sha2-256 signature blob.
std::optional<std::vector<uint8_t>> agent_sign_rsa_sha2(const AgentRsaSigner& signer, const uint8_t* data,
                                                        size_t len) {
  constexpr uint8_t kSignRequest = 13, kSignResponse = 14;
  constexpr uint32_t kRsaSha2_256 = 2;
  sockaddr_un addr{};
  if (signer.socket_path.size() >= sizeof addr.sun_path) return std::nullopt;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, signer.socket_path.c_str(), signer.socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  timeval tv{10, 0};  // a local agent answers at once; one that does not must not hang us
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return std::nullopt;
  std::vector<uint8_t> body;
  body.push_back(kSignRequest);
  put_u32(body, static_cast<uint32_t>(signer.key_blob.size()));
  body.insert(body.end(), signer.key_blob.begin(), signer.key_blob.end());
  put_u32(body, static_cast<uint32_t>(len));
  body.insert(body.end(), data, data + len);
  put_u32(body, kRsaSha2_256);
  std::vector<uint8_t> packet;
  put_u32(packet, static_cast<uint32_t>(body.size()));
  packet.insert(packet.end(), body.begin(), body.end());
  if (!write_all(fd, packet.data(), packet.size())) return std::nullopt;
  uint8_t header[4];
  if (!read_all(fd, header, 4)) return std::nullopt;
  uint32_t reply_len = get_u32(header);
  if (reply_len < 1 || reply_len > 256 * 1024) return std::nullopt;
  std::vector<uint8_t> reply(reply_len);
  if (!read_all(fd, reply.data(), reply.size()) || reply[0] != kSignResponse) return std::nullopt;
  // byte 14, string signature_blob = string "rsa-sha2-256", string raw signature
  size_t pos = 1;
  auto take_string = [&](const uint8_t*& p, size_t& n) {
    if (reply.size() - pos < 4) return false;
    n = get_u32(reply.data() + pos);
    pos += 4;
    if (reply.size() - pos < n) return false;
    p = reply.data() + pos;
    pos += n;
    return true;
  };
  const uint8_t* blob;
  size_t blob_len;
  if (!take_string(blob, blob_len)) return std::nullopt;
  pos = static_cast<size_t>(blob - reply.data());
  const uint8_t* name;
  size_t name_len;
  const uint8_t* sig;
  size_t sig_len;
  if (!take_string(name, name_len) || std::string_view(reinterpret_cast<const char*>(name), name_len) != "rsa-sha2-256" ||
      !take_string(sig, sig_len)) {
    return std::nullopt;
  }
  return std::vector<uint8_t>(sig, sig + sig_len);
}

int agent_rsa_sha2_sign(LIBSSH2_SESSION*, unsigned char** sig, size_t* sig_len, const unsigned char* data,
                        size_t data_len, void** abstract) {
  try {
    auto raw = agent_sign_rsa_sha2(*static_cast<const AgentRsaSigner*>(*abstract), data, data_len);
    if (!raw) return -1;
    auto* out = static_cast<unsigned char*>(std::malloc(raw->size()));
    if (!out) return -1;
    std::memcpy(out, raw->data(), raw->size());
    *sig = out;
    *sig_len = raw->size();
    return 0;
  } catch (...) {
    return -1;
  }
}

// "ssh-rsa" blob relabelled "rsa-sha2-256" (see try_rsa_key for why).
std::vector<uint8_t> relabel_rsa_blob(const unsigned char* blob, size_t len) {
  std::vector<uint8_t> out;
  if (len < 11) return out;
  const std::string name = "rsa-sha2-256";
  put_u32(out, static_cast<uint32_t>(name.size()));
  out.insert(out.end(), name.begin(), name.end());
  out.insert(out.end(), blob + 11, blob + len);  // skip string "ssh-rsa" (4 + 7 bytes)
  return out;
}

class Authenticator {
 public:
  Authenticator(LIBSSH2_SESSION* session, IoWaiter& io, const SessionOptions& options, bool allow_interactive,
                SessionInfo& info)
      : s_(session), io_(io), o_(options), allow_interactive_(allow_interactive), info_(info) {}

  Status run();

  // keyboard-interactive callback body; `this` travels in the session's abstract pointer.
  void answer_prompts(int num_prompts, const LIBSSH2_USERAUTH_KBDINT_PROMPT* prompts,
                      LIBSSH2_USERAUTH_KBDINT_RESPONSE* responses);

 private:
  bool done() const { return libssh2_userauth_authenticated(s_) != 0; }
  std::optional<std::string> ask(const std::string& prompt, bool echo) {
    if (o_.batch_mode || !o_.prompt) return std::nullopt;
    io_.pause();
    std::optional<std::string> answer;
    try {
      answer = o_.prompt(prompt, echo);
    } catch (...) {
      answer.reset();
    }
    io_.resume();
    return answer;
  }
  void note(std::string what) { tried_.push_back(std::move(what)); }
  void debug(const std::string& what) {
    if (o_.debug) o_.debug(what);
  }
  Status timeout() {
    return Error::timed_out("authentication with " + o_.host + " did not complete within the connect timeout");
  }
  Status try_agent();
  Status try_identity(const std::string& path, bool explicitly_given);
  Status try_rsa_key(const std::string& path, const KeyFileInfo& kinfo, const std::string& passphrase, bool* accepted,
                     bool* wrong_passphrase);
  Status try_password();
  Status try_keyboard_interactive();
  Error refusal() const;

  LIBSSH2_SESSION* s_;
  IoWaiter& io_;
  const SessionOptions& o_;
  bool allow_interactive_;
  SessionInfo& info_;
  std::string methods_;
  std::vector<std::string> tried_;
  // keyboard-interactive state
  bool kbd_used_password_ = false;
  bool kbd_cancelled_ = false;
  int kbd_rounds_ = 0;
};

void kbd_callback(const char*, int, const char*, int, int num_prompts, const LIBSSH2_USERAUTH_KBDINT_PROMPT* prompts,
                  LIBSSH2_USERAUTH_KBDINT_RESPONSE* responses, void** abstract) {
  // Must not throw into libssh2.
  try {
    if (abstract && *abstract) static_cast<Authenticator*>(*abstract)->answer_prompts(num_prompts, prompts, responses);
  } catch (...) {
  }
}

Status Authenticator::run() {
  const std::string& user = o_.user;
  char* list = io_.run_ptr<char>(
      [&] { return libssh2_userauth_list(s_, user.c_str(), static_cast<unsigned>(user.size())); });
  if (done()) {
    info_.auth_method = "none";
    return {};
  }
  if (!list) {
    if (io_.expired()) return timeout();
    return Error::transport_error("the server did not list authentication methods: " + last_error(s_));
  }
  methods_ = list;
  debug("server allows authentication: " + methods_);

  if (!o_.pubkey_authentication) {
    note("publickey: turned off (PubkeyAuthentication=no)");
  } else if (method_offered(methods_, "publickey")) {
    const bool files_given = !o_.identity_files.empty();
    if (o_.use_agent && !(o_.identities_only && files_given)) {
      if (auto st = try_agent(); !st || done()) return st;
    }
    std::vector<std::pair<std::string, bool>> files;
    if (files_given) {
      for (const auto& f : o_.identity_files) files.emplace_back(expand_tilde(f), true);
    } else {
      for (const char* name : {"id_ed25519", "id_ecdsa", "id_rsa"}) {
        std::string path = home_dir() + "/.ssh/" + name;
        if (file_exists(path)) files.emplace_back(path, false);
      }
      if (files.empty()) note("identity files: none found in ~/.ssh (id_ed25519, id_ecdsa, id_rsa)");
    }
    for (const auto& [path, given] : files) {
      if (auto st = try_identity(path, given); !st || done()) return st;
    }
  } else {
    note("publickey: not allowed by the server");
  }

  if (o_.password_authentication) {
    if (!method_offered(methods_, "password")) {
      note("password: not allowed by the server");
    } else if (auto st = try_password(); !st || done()) {
      return st;
    }
  }
  if (o_.kbd_interactive_authentication && method_offered(methods_, "keyboard-interactive")) {
    if (auto st = try_keyboard_interactive(); !st || done()) return st;
  }
  return refusal();
}

Status Authenticator::try_agent() {
  const char* sock = std::getenv("SSH_AUTH_SOCK");
  if (!sock || !*sock) {
    note("agent: SSH_AUTH_SOCK not set");
    return {};
  }
  std::unique_ptr<LIBSSH2_AGENT, AgentDeleter> agent(libssh2_agent_init(s_));
  if (!agent) {
    note("agent: cannot initialise");
    return {};
  }
  if (libssh2_agent_connect(agent.get()) != 0) {
    note(std::string("agent: cannot connect to ") + sock);
    return {};
  }
  if (libssh2_agent_list_identities(agent.get()) != 0) {
    note("agent: cannot list identities");
    return {};
  }
  int count = 0;
  libssh2_agent_publickey* identity = nullptr;
  libssh2_agent_publickey* prev = nullptr;
  while (libssh2_agent_get_identity(agent.get(), &identity, prev) == 0) {
    prev = identity;
    ++count;
    const std::string type = blob_key_type(identity->blob, identity->blob_len);
    const std::string label = std::string(identity->comment ? identity->comment : "") + " (" + type + ")";
    int rc;
    if (type == "ssh-rsa") {
      AgentRsaSigner signer{sock, std::vector<uint8_t>(identity->blob, identity->blob + identity->blob_len)};
      std::vector<uint8_t> blob = relabel_rsa_blob(identity->blob, identity->blob_len);
      void* abstract = &signer;
      rc = io_.run([&] {
        return libssh2_userauth_publickey(s_, o_.user.c_str(), blob.data(), blob.size(), agent_rsa_sha2_sign,
                                          &abstract);
      });
    } else {
      rc = io_.run([&] { return libssh2_agent_userauth(agent.get(), o_.user.c_str(), identity); });
    }
    if (rc == 0 && done()) {
      info_.auth_method = "agent";
      debug("authenticated with agent key " + label);
      return {};
    }
    if (rc == LIBSSH2_ERROR_TIMEOUT) return timeout();
    note("agent key " + label + ": not accepted");
  }
  if (count == 0) note("agent (no keys)");
  return {};
}

Status Authenticator::try_rsa_key(const std::string& path, const KeyFileInfo& kinfo, const std::string& passphrase,
                                  bool* accepted, bool* wrong_passphrase) {
  (void)kinfo;
  *accepted = false;
  *wrong_passphrase = false;
  auto key = load_rsa_key(path, passphrase);
  if (!key) {
    if (key.error().kind == Error::Kind::auth && key.error().code == 1) {
      *wrong_passphrase = true;
      return {};
    }
    note(path + ": " + key.error().message);
    return {};
  }
  // libssh2 1.10 takes the request's algorithm name, and the name in the signature blob it wraps
  // around our raw signature, from the public key blob's type field. So the blob is labelled
  // "rsa-sha2-256": OpenSSH (9.2 measured) parses it as an RSA key and verifies an rsa-sha2-256
  // signature, where "ssh-rsa" is refused before any signature (not in PubkeyAcceptedAlgorithms).
  std::vector<uint8_t> blob = key->public_blob("rsa-sha2-256");
  if (blob.empty()) {
    note(path + ": cannot extract the RSA public key");
    return {};
  }
  void* abstract = &key.value();
  int rc = io_.run([&] {
    return libssh2_userauth_publickey(s_, o_.user.c_str(), blob.data(), blob.size(), rsa_sha2_sign, &abstract);
  });
  if (rc == LIBSSH2_ERROR_TIMEOUT) return timeout();
  *accepted = rc == 0 && done();
  if (!*accepted) note(path + ": not accepted (rsa-sha2-256)");
  return {};
}

Status Authenticator::try_identity(const std::string& path, bool explicitly_given) {
  auto kinfo = inspect_key_file(path);
  if (!kinfo) {
    note(path + ": " + kinfo.error().message);
    return {};
  }
  (void)explicitly_given;
  const std::string pub = path + ".pub";
  const bool have_pub = file_exists(pub);

  auto attempt = [&](const std::string& passphrase, bool* wrong) -> Status {
    *wrong = false;
    if (kinfo->is_rsa()) {
      bool accepted = false;
      if (auto st = try_rsa_key(path, *kinfo, passphrase, &accepted, wrong); !st) return st;
      if (accepted) info_.auth_method = "publickey " + path;
      return {};
    }
    int rc = io_.run([&] {
      return libssh2_userauth_publickey_fromfile_ex(s_, o_.user.c_str(), static_cast<unsigned>(o_.user.size()),
                                                    have_pub ? pub.c_str() : nullptr, path.c_str(),
                                                    passphrase.c_str());
    });
    if (rc == LIBSSH2_ERROR_TIMEOUT) return timeout();
    if (rc == 0 && done()) {
      info_.auth_method = "publickey " + path;
      return {};
    }
    if (kinfo->encrypted && is_key_unusable_code(rc) &&
        check_passphrase(path, *kinfo, passphrase) == PassphraseVerdict::wrong) {
      *wrong = true;
      return {};
    }
    if (rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_KEYFILE_AUTH_FAILED) {
      note(path + ": libssh2 cannot use this key (" + last_error(s_) + ")");
    } else {
      note(path + ": not accepted");
    }
    return {};
  };

  bool wrong = false;
  if (!kinfo->encrypted) {
    Status st = attempt("", &wrong);
    if (st && done()) debug("authenticated with " + path);
    return st;
  }
  std::string prompt = "Enter passphrase for key '" + path + "': ";
  for (int i = 0; i < kPassphraseTries; ++i) {
    auto passphrase = ask(prompt, false);
    if (!passphrase) {
      note(path + ": encrypted, and no passphrase could be asked" +
           std::string(o_.batch_mode ? " (BatchMode)" : " (no terminal and no SSH_ASKPASS)") +
           "; load it into ssh-agent with ssh-add");
      return {};
    }
    // A typo is caught locally, before any round trip.
    if (check_passphrase(path, *kinfo, *passphrase) == PassphraseVerdict::wrong) {
      OPENSSL_cleanse(passphrase->data(), passphrase->size());
      prompt = "Bad passphrase, try again for '" + path + "': ";
      wrong = true;
      continue;
    }
    Status st = attempt(*passphrase, &wrong);
    OPENSSL_cleanse(passphrase->data(), passphrase->size());
    if (!st || done() || !wrong) return st;
  }
  note(path + ": incorrect passphrase (" + std::to_string(kPassphraseTries) + " tries)");
  return {};
}

Status Authenticator::try_password() {
  if (!allow_interactive_) {
    note("password: disabled because the host key changed");
    return {};
  }
  const std::string prompt = o_.user + "@" + o_.host + "'s password: ";
  for (int i = 0; i < kPasswordTries; ++i) {
    std::optional<std::string> password;
    if (i == 0 && o_.password) password = *o_.password;
    else if (o_.password && i > 0) break;  // a given password is tried once
    else password = ask(prompt, false);
    if (!password) {
      note(std::string("password: no password given and none could be asked") +
           (o_.batch_mode ? " (BatchMode)" : " (no terminal and no SSH_ASKPASS)"));
      return {};
    }
    int rc = io_.run([&] {
      return libssh2_userauth_password_ex(s_, o_.user.c_str(), static_cast<unsigned>(o_.user.size()),
                                          password->c_str(), static_cast<unsigned>(password->size()), nullptr);
    });
    OPENSSL_cleanse(password->data(), password->size());
    if (rc == LIBSSH2_ERROR_TIMEOUT) return timeout();
    if (rc == 0 && done()) {
      info_.auth_method = "password";
      return {};
    }
    if (rc == LIBSSH2_ERROR_PASSWORD_EXPIRED) {
      note("password: expired on the server; change it with an interactive ssh login");
      return {};
    }
  }
  note("password: not accepted");
  return {};
}

void Authenticator::answer_prompts(int num_prompts, const LIBSSH2_USERAUTH_KBDINT_PROMPT* prompts,
                                   LIBSSH2_USERAUTH_KBDINT_RESPONSE* responses) {
  ++kbd_rounds_;
  // The server may send an info request with no prompts (OpenSSH+PAM does after the password):
  // nothing to answer.
  for (int i = 0; i < num_prompts; ++i) {
    responses[i].text = nullptr;
    responses[i].length = 0;
    if (kbd_cancelled_) continue;
    std::string text(reinterpret_cast<const char*>(prompts[i].text), prompts[i].length);
    bool echo = prompts[i].echo != 0;
    std::optional<std::string> answer;
    bool looks_like_password = !echo && text.find("assword") != std::string::npos;
    if (looks_like_password && o_.password && !kbd_used_password_) {
      answer = *o_.password;
      kbd_used_password_ = true;
    } else {
      answer = ask(text, echo);
    }
    if (!answer) {
      kbd_cancelled_ = true;
      continue;
    }
    auto* copy = static_cast<char*>(std::malloc(answer->size() + 1));  // libssh2 frees it with free()
    if (copy) {
      std::memcpy(copy, answer->data(), answer->size());
      copy[answer->size()] = '\0';
      responses[i].text = copy;
      responses[i].length = static_cast<unsigned>(answer->size());
    }
    OPENSSL_cleanse(answer->data(), answer->size());
  }
}

Status Authenticator::try_keyboard_interactive() {
  if (!allow_interactive_) {
    note("keyboard-interactive: disabled because the host key changed");
    return {};
  }
  void** abstract = libssh2_session_abstract(s_);
  void* saved = *abstract;
  *abstract = this;
  kbd_cancelled_ = false;
  kbd_rounds_ = 0;
  int rc = io_.run([&] {
    return libssh2_userauth_keyboard_interactive_ex(s_, o_.user.c_str(), static_cast<unsigned>(o_.user.size()),
                                                    kbd_callback);
  });
  *abstract = saved;
  if (rc == LIBSSH2_ERROR_TIMEOUT) return timeout();
  if (rc == 0 && done()) {
    info_.auth_method = "keyboard-interactive";
    return {};
  }
  note(kbd_cancelled_ ? std::string("keyboard-interactive: no answer could be asked") +
                            (o_.batch_mode ? " (BatchMode)" : " (no terminal and no SSH_ASKPASS)")
                      : "keyboard-interactive: not accepted");
  return {};
}

Error Authenticator::refusal() const {
  std::string tried;
  for (const auto& t : tried_) tried += (tried.empty() ? "" : ", ") + t;
  std::string msg = "Permission denied for " + o_.user + "@" + o_.host + " (server allows: " + methods_ +
                    "; tried: " + (tried.empty() ? "nothing" : tried) + "). ";
  msg += "Use -o IdentityFile=PATH with a key listed in the server's authorized_keys";
  if (method_offered(methods_, "password") || method_offered(methods_, "keyboard-interactive")) {
    msg += ", or give the password (password_stdin, or run where it can be asked: a terminal or SSH_ASKPASS)";
  }
  return Error::auth_error(msg);
}

}  // namespace

Status authenticate(LIBSSH2_SESSION* session, IoWaiter& io, const SessionOptions& options, bool allow_interactive,
                    SessionInfo& info) {
  Authenticator auth(session, io, options, allow_interactive, info);
  return auth.run();
}

}  // namespace sftpfs::ssh::detail
