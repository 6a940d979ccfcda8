// Goal: flags, environment fallbacks and errors behave as the help text promises.
// Method: parse argument vectors against a small spec table.
#include "node/cli/flags.h"

#include <gtest/gtest.h>

#include <cstdlib>

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

TEST(Flags, ParseUintBounds) {
  EXPECT_TRUE(ParseUint("shards", "4", 1, 255).ok());
  EXPECT_FALSE(ParseUint("shards", "0", 1, 255).ok());
  EXPECT_FALSE(ParseUint("shards", "4x", 1, 255).ok());
  EXPECT_EQ(ParseUint("shards", "-1", 1, 255).status().message(),
            "--shards: '-1' is not a whole number");
}

}  // namespace
}  // namespace ringpeer::cli
