// ssh_config reading: Host patterns, Match, first value wins, Include, tokens.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cli/ssh_config.hpp"

namespace sftpfs::cli {
namespace {

HostContext context(const std::string& host) { return HostContext{host, "alice", "/home/alice", ""}; }

SshSettings parse_for(const std::string& host, const std::string& text) {
  SshSettings settings;
  Status s = parse_ssh_config_text(text, "test", context(host), "/home/alice/.ssh", settings);
  EXPECT_TRUE(s.has_value()) << (s ? "" : s.error().message);
  return settings;
}

std::string value(const SshSettings& settings, const std::string& key) {
  const std::string* v = settings.get(key);
  return v ? *v : "<unset>";
}

TEST(Wildcard, Patterns) {
  EXPECT_TRUE(wildcard_match("*", "anything"));
  EXPECT_TRUE(wildcard_match("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(wildcard_match("*.example.com", "example.com"));
  EXPECT_TRUE(wildcard_match("host?", "host1"));
  EXPECT_FALSE(wildcard_match("host?", "host12"));
  EXPECT_TRUE(wildcard_match("HOST*", "hostname"));  // host names compare without case
  EXPECT_TRUE(wildcard_match("a*b*c", "axxbyyc"));
  EXPECT_FALSE(wildcard_match("a*b*c", "axxbyy"));
  EXPECT_TRUE(wildcard_match("", ""));
  EXPECT_FALSE(wildcard_match("", "x"));
}

TEST(Wildcard, NegationVetoes) {
  EXPECT_TRUE(host_patterns_match({"*.corp", "!bastion.corp"}, "db.corp"));
  EXPECT_FALSE(host_patterns_match({"*.corp", "!bastion.corp"}, "bastion.corp"));
  EXPECT_FALSE(host_patterns_match({"!x"}, "y"));  // a negation alone matches nothing
  EXPECT_TRUE(host_patterns_match({"a", "b", "c"}, "b"));
}

TEST(SshConfigText, HostBlocksAndFirstValueWins) {
  std::string text =
      "# comment\n"
      "Port 1000\n"  // global: applies to every host, and wins over later Port lines
      "Host web*\n"
      "  User webuser\n"
      "  Port 2000\n"
      "Host web1 db1\n"
      "  User second\n"
      "  HostName 10.0.0.1\n"
      "Host *\n"
      "  User fallback\n"
      "  IdentityFile ~/.ssh/a\n"
      "  IdentityFile ~/.ssh/b\n";
  auto web1 = parse_for("web1", text);
  EXPECT_EQ(value(web1, "port"), "1000");
  EXPECT_EQ(value(web1, "User"), "webuser");
  EXPECT_EQ(value(web1, "HOSTNAME"), "10.0.0.1");
  EXPECT_EQ(web1.all("identityfile"), (std::vector<std::string>{"~/.ssh/a", "~/.ssh/b"}));
  auto db1 = parse_for("db1", text);
  EXPECT_EQ(value(db1, "user"), "second");
  auto other = parse_for("mail", text);
  EXPECT_EQ(value(other, "user"), "fallback");
  EXPECT_EQ(value(other, "hostname"), "<unset>");
}

TEST(SshConfigText, EqualsSignsQuotesAndCase) {
  auto s = parse_for("h",
                     "host h\n"
                     "  PORT=2022\n"
                     "  user = \"bob\"\n"
                     "\tIdentityFile \"/path with space/key\"\n"
                     "  UserKnownHostsFile /a \"/b c\"\n");
  EXPECT_EQ(value(s, "port"), "2022");
  EXPECT_EQ(value(s, "user"), "bob");
  EXPECT_EQ(s.all("identityfile"), (std::vector<std::string>{"/path with space/key"}));
  auto words = split_words(value(s, "userknownhostsfile"));
  ASSERT_TRUE(words);
  EXPECT_EQ(*words, (std::vector<std::string>{"/a", "/b c"}));
}

TEST(SshConfigText, NegatedHostPattern) {
  std::string text =
      "Host *.corp !gw.corp\n"
      "  ProxyJump gw.corp\n";
  EXPECT_EQ(value(parse_for("db.corp", text), "proxyjump"), "gw.corp");
  EXPECT_EQ(value(parse_for("gw.corp", text), "proxyjump"), "<unset>");
}

TEST(SshConfigText, Match) {
  std::string text =
      "Match host db*\n"
      "  Port 5000\n"
      "Match user alice\n"
      "  User alice-remote\n"
      "Match exec \"true\"\n"
      "  Compression yes\n"
      "Match !localuser root\n"
      "  ServerAliveInterval 30\n"
      "Match all\n"
      "  ConnectTimeout 9\n";
  auto db = parse_for("db1", text);
  EXPECT_EQ(value(db, "port"), "5000");
  EXPECT_EQ(value(db, "user"), "alice-remote");   // remote user defaults to the local user
  EXPECT_EQ(value(db, "compression"), "<unset>");  // exec is not evaluated: block skipped
  EXPECT_EQ(value(db, "serveraliveinterval"), "30");
  EXPECT_EQ(value(db, "connecttimeout"), "9");
  EXPECT_EQ(value(parse_for("web", text), "port"), "<unset>");
}

TEST(SshConfigText, Errors) {
  SshSettings settings;
  auto ctx = context("h");
  Status no_value = parse_ssh_config_text("Port\n", "cfg", ctx, "/x", settings);
  ASSERT_FALSE(no_value);
  EXPECT_NE(no_value.error().message.find("cfg:1"), std::string::npos);
  Status bad_quote = parse_ssh_config_text("\n\nHost \"a\n", "cfg", ctx, "/x", settings);
  ASSERT_FALSE(bad_quote);
  EXPECT_NE(bad_quote.error().message.find("cfg:3"), std::string::npos);
  EXPECT_FALSE(parse_ssh_config_text("Match\n", "cfg", ctx, "/x", settings));
  EXPECT_FALSE(parse_ssh_config_text("Match host\n", "cfg", ctx, "/x", settings));
}

class ConfigDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/sftpfs-sshcfg-XXXXXX";
    dir_ = mkdtemp(templ);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigDir, IncludeWithGlobRelativeToBase) {
  write("conf.d/10-first.conf", "Host h\n  Port 1111\n");
  write("conf.d/20-second.conf", "Host h\n  Port 2222\n  User from-second\n");
  write("other", "User from-other\n");
  std::string main = write("config",
                           "Host h\n"
                           "  Include conf.d/*.conf\n"
                           "  HostKeyAlias after-include\n"  // still inside Host h: the block is restored
                           "Host nomatch\n"
                           "  Include other\n"  // not active: not included
                           "Host *\n"
                           "  User last\n");
  SshSettings settings;
  ASSERT_TRUE(read_ssh_config(main, context("h"), dir_, false, settings));
  EXPECT_EQ(value(settings, "port"), "1111");  // files in glob order, first wins
  EXPECT_EQ(value(settings, "user"), "from-second");
  EXPECT_EQ(value(settings, "hostkeyalias"), "after-include");
}

TEST_F(ConfigDir, IncludeHomeRelativeAndLoop) {
  std::string loop = write("loop", "Include " + dir_ + "/loop\n");
  SshSettings settings;
  Status s = read_ssh_config(loop, context("h"), dir_, false, settings);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("Include"), std::string::npos);

  HostContext ctx{"h", "alice", dir_, ""};
  write("inc", "Port 4444\n");
  std::string main = write("main", "Include ~/inc\nInclude missing-*.conf\n");
  SshSettings home_settings;
  ASSERT_TRUE(read_ssh_config(main, ctx, dir_, false, home_settings));
  EXPECT_EQ(value(home_settings, "port"), "4444");
}

TEST_F(ConfigDir, MissingFiles) {
  SshSettings settings;
  EXPECT_TRUE(read_ssh_config(dir_ + "/absent", context("h"), dir_, true, settings));
  Status s = read_ssh_config(dir_ + "/absent", context("h"), dir_, false, settings);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("absent"), std::string::npos);
}

TEST(Tokens, Expansion) {
  TokenValues t;
  t.home = "/home/alice";
  t.local_user = "alice";
  t.host = "srv.example.org";
  t.remote_user = "bob";
  t.original_host = "srv";
  t.port = "2222";
  t.local_host = "box";
  t.uid = "1000";
  auto r = expand_tokens("%d/.ssh/%r@%h:%p-%n-%u-%l-%i-100%%", t, "IdentityFile");
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "/home/alice/.ssh/bob@srv.example.org:2222-srv-alice-box-1000-100%");
  auto unknown = expand_tokens("%z", t, "IdentityFile");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("%z"), std::string::npos);
  EXPECT_FALSE(expand_tokens("trailing%", t, "IdentityFile"));
}

TEST(Tokens, Tilde) {
  EXPECT_EQ(expand_tilde("~/.ssh/id", "/home/a"), "/home/a/.ssh/id");
  EXPECT_EQ(expand_tilde("~", "/home/a"), "/home/a");
  EXPECT_EQ(expand_tilde("/abs/~x", "/home/a"), "/abs/~x");
  EXPECT_EQ(expand_tilde("~root/k", "/home/a"), "/root/k");
  EXPECT_EQ(expand_tilde("~no-such-user-sftpfs/k", "/home/a"), "~no-such-user-sftpfs/k");
}

}  // namespace
}  // namespace sftpfs::cli
