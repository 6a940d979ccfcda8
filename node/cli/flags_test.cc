// Goal: flags, environment fallbacks and errors behave as the help text promises.
// Method: parse argument vectors against a small spec table.
#include "node/cli/flags.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace ringpeer::cli {
namespace {

constexpr FlagSpec kSpecs[] = {
    {"port", FlagSpec::Kind::kValue, "RINGPEER_TEST_PORT", "N", "7700", "port"},
    {"peer", FlagSpec::Kind::kList, "RINGPEER_TEST_PEER", "HOST:PORT", nullptr, "peer"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "json"},
};

TEST(Flags, ValuesListsAndSwitches) {
  const char* args[] = {"--port", "1", "--peer=a:1", "--peer", "b:2", "--json"};
  auto f = Flags::Parse(kSpecs, args, 0);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Value("port"), "1");
  EXPECT_EQ(f->List("peer"), (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_TRUE(f->Switch("json"));
}

TEST(Flags, EnvironmentIsTheFallback) {
  setenv("RINGPEER_TEST_PORT", "9", 1);
  setenv("RINGPEER_TEST_PEER", "x:1, y:2", 1);
  const char* none[] = {"--json"};
  auto f = Flags::Parse(kSpecs, std::span<const char* const>(none, 0), 0);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->Value("port"), "9");
  EXPECT_EQ(f->List("peer"), (std::vector<std::string>{"x:1", "y:2"}));
  const char* args[] = {"--port=3"};
  f = Flags::Parse(kSpecs, args, 0);
  EXPECT_EQ(f->Value("port"), "3");  // the flag wins
  unsetenv("RINGPEER_TEST_PORT");
  unsetenv("RINGPEER_TEST_PEER");
}

TEST(Flags, ErrorsAreClear) {
  const char* unknown[] = {"--nope"};
  auto f = Flags::Parse(kSpecs, unknown, 0);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), "unknown flag --nope");
  const char* missing[] = {"--port"};
  f = Flags::Parse(kSpecs, missing, 0);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), "flag --port needs a value (N)");
  const char* stray[] = {"extra"};
  EXPECT_FALSE(Flags::Parse(kSpecs, stray, 0).ok());
  EXPECT_TRUE(Flags::Parse(kSpecs, stray, 1).ok());
  const char* sw[] = {"--json=1"};
  EXPECT_FALSE(Flags::Parse(kSpecs, sw, 0).ok());
}

constexpr FlagSpec kConfigSpecs[] = {
    {"config", FlagSpec::Kind::kValue, "RINGPEER_TEST_CONFIG", "FILE", nullptr, "config"},
    {"port", FlagSpec::Kind::kValue, "RINGPEER_TEST_CPORT", "N", "7700", "port"},
    {"peer", FlagSpec::Kind::kList, "RINGPEER_TEST_CPEER", "HOST:PORT", nullptr, "peer"},
    {"shards", FlagSpec::Kind::kValue, "RINGPEER_TEST_CSHARDS", "N", nullptr, "shards"},
    {"steer", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "switch"},
};

std::string WriteConfig(const std::string& text) {
  const std::string path = ::testing::TempDir() + "/ringpeer_flags_test.conf";
  std::ofstream(path) << text;
  return path;
}

TEST(Flags, ConfigFileSitsBelowFlagsAndEnvironment) {
  const std::string path = WriteConfig(
      "# a comment\n"
      "port = 1000   # trailing comment\n"
      "peer = a:1, b:2\n"
      "peer = c:3\n"
      "shards = \"4\"\n"
      "steer = true\n");
  setenv("RINGPEER_TEST_CSHARDS", "6", 1);
  const std::string arg = "--config=" + path;
  const char* args[] = {arg.c_str(), "--port", "2000"};
  auto f = Flags::Parse(kConfigSpecs, args, 0);
  unsetenv("RINGPEER_TEST_CSHARDS");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Value("port"), "2000");
  EXPECT_EQ(f->Source("port"), "flag");
  EXPECT_EQ(f->Value("shards"), "6");
  EXPECT_EQ(f->Source("shards"), "env RINGPEER_TEST_CSHARDS");
  EXPECT_EQ(f->List("peer"), (std::vector<std::string>{"a:1", "b:2", "c:3"}));
  EXPECT_EQ(f->Source("peer"), "config " + path + ":3");  // the first line that set it
  EXPECT_TRUE(f->Switch("steer"));
  const char* none[] = {"--port", "1"};
  auto g = Flags::Parse(kConfigSpecs, none, 0);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->Source("shards"), "default");
}

TEST(Flags, ConfigFileFromEnvironmentAndItsErrors) {
  const std::string path = WriteConfig("port = 5\n");
  setenv("RINGPEER_TEST_CONFIG", path.c_str(), 1);
  auto f = Flags::Parse(kConfigSpecs, std::span<const char* const>(), 0);
  unsetenv("RINGPEER_TEST_CONFIG");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Value("port"), "5");

  const std::string bad = WriteConfig("port = 5\nnope = 1\n");
  const std::string arg = "--config=" + bad;
  const char* args[] = {arg.c_str()};
  f = Flags::Parse(kConfigSpecs, args, 0);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().message(), bad + ":2: unknown setting 'nope'");

  const std::string noeq = WriteConfig("port 5\n");
  const std::string arg2 = "--config=" + noeq;
  const char* args2[] = {arg2.c_str()};
  EXPECT_FALSE(Flags::Parse(kConfigSpecs, args2, 0).ok());

  const char* missing[] = {"--config", "/nonexistent/ringpeer.conf"};
  f = Flags::Parse(kConfigSpecs, missing, 0);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("cannot open"), std::string::npos);
}

TEST(Flags, ParseBytesSuffixesAndBounds) {
  EXPECT_EQ(*ParseBytes("storage-max", "4096", 1, uint64_t{1} << 50), 4096u);
  EXPECT_EQ(*ParseBytes("storage-max", "64K", 1, uint64_t{1} << 50), 65536u);
  EXPECT_EQ(*ParseBytes("storage-max", "3MiB", 1, uint64_t{1} << 50), 3u << 20);
  EXPECT_EQ(*ParseBytes("storage-max", "2G", 1, uint64_t{1} << 50), uint64_t{2} << 30);
  EXPECT_EQ(*ParseBytes("storage-max", "1T", 1, uint64_t{1} << 50), uint64_t{1} << 40);
  EXPECT_FALSE(ParseBytes("storage-max", "", 1, 100).ok());
  EXPECT_FALSE(ParseBytes("storage-max", "K", 1, 100).ok());
  EXPECT_FALSE(ParseBytes("storage-max", "1.5G", 1, uint64_t{1} << 50).ok());
  EXPECT_FALSE(ParseBytes("storage-max", "-1", 1, 100).ok());
  EXPECT_FALSE(ParseBytes("storage-max", "1P", 1, uint64_t{1} << 50).ok());
  EXPECT_FALSE(ParseBytes("storage-max", "2K", 1, 2047).ok());
  EXPECT_FALSE(ParseBytes("storage-max", "100000T", 1, uint64_t{1} << 50).ok());
  const auto e = ParseBytes("storage-max", "1x", 1, 100);
  EXPECT_NE(e.status().message().find("--storage-max"), std::string::npos);
}

TEST(Flags, ParseUintBounds) {
  EXPECT_TRUE(ParseUint("shards", "4", 1, 255).ok());
  EXPECT_FALSE(ParseUint("shards", "0", 1, 255).ok());
  EXPECT_FALSE(ParseUint("shards", "4x", 1, 255).ok());
  EXPECT_EQ(ParseUint("shards", "-1", 1, 255).status().message(),
            "--shards: '-1' is not a whole number");
}

}  // namespace
}  // namespace ringpeer::cli
