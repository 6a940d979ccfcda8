// Goal: the data directory keeps one identity across restarts, refuses a second node,
// and turns bad files into clear errors. Method: real files in a temporary directory.
#include "node/store/data_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>
#include <fstream>
#include <gtest/gtest.h>

namespace ringpeer::store {
namespace {

// Every directory made here is removed when the test binary ends (tests clean up).
std::vector<std::string>& MadeDirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

class RemoveMadeDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    for (const std::string& d : MadeDirs()) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};
const auto* const kRemoveMadeDirs = ::testing::AddGlobalTestEnvironment(new RemoveMadeDirs);

std::string TempDir() {
  char tmpl[] = "/tmp/ringpeer-datadir-XXXXXX";
  char* d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  if (d != nullptr) MadeDirs().emplace_back(d);
  return std::string(d);
}

TEST(DataDir, KeyPersistsWithOwnerOnlyMode) {
  ASSERT_TRUE(wire::InitCrypto());
  std::string dir = TempDir() + "/sub/data";
  wire::PublicKey first;
  {
    auto dd = DataDir::Open(dir);
    ASSERT_TRUE(dd.ok()) << dd.status();
    auto key = dd->LoadOrCreateNodeKey();
    ASSERT_TRUE(key.ok()) << key.status();
    first = key->public_key;
    struct stat st;
    ASSERT_EQ(stat((dir + "/node.key").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  auto dd = DataDir::Open(dir);
  ASSERT_TRUE(dd.ok());
  auto key = dd->LoadOrCreateNodeKey();
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->public_key, first);
}

TEST(DataDir, SecondOpenIsRefused) {
  std::string dir = TempDir();
  auto a = DataDir::Open(dir);
  ASSERT_TRUE(a.ok());
  auto b = DataDir::Open(dir);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("in use by another ringpeer"), std::string::npos);
}

TEST(DataDir, CorruptAndExposedKeysAreClearErrors) {
  std::string dir = TempDir();
  auto dd = DataDir::Open(dir);
  ASSERT_TRUE(dd.ok());
  {
    std::ofstream(dir + "/node.key") << "garbage\n";
  }
  chmod((dir + "/node.key").c_str(), 0600);
  auto key = dd->LoadOrCreateNodeKey();
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("corrupt"), std::string::npos);
  chmod((dir + "/node.key").c_str(), 0644);
  key = dd->LoadOrCreateNodeKey();
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("readable by others"), std::string::npos);
}

TEST(DataDir, NotADirectoryOrNotWritable) {
  std::string dir = TempDir();
  std::ofstream(dir + "/file") << "x";
  auto dd = DataDir::Open(dir + "/file");
  ASSERT_FALSE(dd.ok());
  EXPECT_NE(dd.status().message().find("not a directory"), std::string::npos);
  if (geteuid() != 0) {  // root can write anywhere
    chmod(dir.c_str(), 0500);
    EXPECT_FALSE(DataDir::Open(dir).ok());
    chmod(dir.c_str(), 0700);
  }
}

TEST(DataDir, FormatMarkerWrittenAndForeignOrNewerRefused) {
  const std::string dir = TempDir();
  {
    auto dd = DataDir::Open(dir);
    ASSERT_TRUE(dd.ok()) << dd.status();
  }
  std::ifstream in(dir + "/FORMAT");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "ringpeer-data-dir 1");
  ASSERT_TRUE(DataDir::Open(dir).ok());

  for (const char* marker : {"postgres 15\n", "ringpeer-data-dir 2\n"}) {
    const std::string other = TempDir();
    std::ofstream(other + "/FORMAT") << marker;
    auto dd = DataDir::Open(other);
    ASSERT_FALSE(dd.ok());
    EXPECT_EQ(dd.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(dd.status().message().find(other), std::string::npos) << dd.status();
    struct stat st;
    EXPECT_NE(stat((other + "/lock").c_str(), &st), 0) << "a refused directory is untouched";
  }
}

}  // namespace
}  // namespace ringpeer::store
