#include "node/cli/cpu_quota.h"

#include <gtest/gtest.h>

namespace ringpeer::cli {
namespace {

TEST(CpuMax, QuotaOverPeriodIsCpus) {
  auto two = ParseCpuMax("200000 100000\n");
  ASSERT_TRUE(two.ok());
  ASSERT_TRUE(two->has_value());
  EXPECT_DOUBLE_EQ(**two, 2.0);
  auto half = ParseCpuMax("50000 100000");
  ASSERT_TRUE(half.ok() && half->has_value());
  EXPECT_DOUBLE_EQ(**half, 0.5);
  auto odd_period = ParseCpuMax("150000 50000");
  ASSERT_TRUE(odd_period.ok() && odd_period->has_value());
  EXPECT_DOUBLE_EQ(**odd_period, 3.0);
  // The period may be left out (the kernel's default, 100 ms).
  auto no_period = ParseCpuMax("100000");
  ASSERT_TRUE(no_period.ok() && no_period->has_value());
  EXPECT_DOUBLE_EQ(**no_period, 1.0);
}

TEST(CpuMax, MaxIsNoLimit) {
  auto none = ParseCpuMax("max 100000\n");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto bare = ParseCpuMax("max");
  ASSERT_TRUE(bare.ok());
  EXPECT_FALSE(bare->has_value());
}

TEST(CpuMax, MalformedIsAnError) {
  for (const char* bad : {"", "\n", "abc 100000", "100000 0", "100000 -5", "0 100000",
                          "-1 100000", "1 2 3", "200000 100000x", "max abc"}) {
    EXPECT_FALSE(ParseCpuMax(bad).ok()) << "'" << bad << "'";
  }
}

TEST(CfsQuota, V1Files) {
  auto one = ParseCfsQuota("100000\n", "100000\n");
  ASSERT_TRUE(one.ok() && one->has_value());
  EXPECT_DOUBLE_EQ(**one, 1.0);
  auto none = ParseCfsQuota("-1\n", "100000\n");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(ParseCfsQuota("0", "100000").ok());
  EXPECT_FALSE(ParseCfsQuota("-2", "100000").ok());
  EXPECT_FALSE(ParseCfsQuota("100000", "0").ok());
  EXPECT_FALSE(ParseCfsQuota("x", "100000").ok());
}

TEST(CgroupDirs, V2OwnCgroupAndParentsUpToTheMount) {
  const char* mountinfo =
      "22 1 0:21 / /sys ro - sysfs sysfs rw\n"
      "30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
  const auto dirs = CgroupCpuDirs(mountinfo, "0::/system.slice/ringpeer.service\n");
  ASSERT_EQ(dirs.size(), 3u);
  EXPECT_EQ(dirs[0].path, "/sys/fs/cgroup/system.slice/ringpeer.service");
  EXPECT_EQ(dirs[1].path, "/sys/fs/cgroup/system.slice");
  EXPECT_EQ(dirs[2].path, "/sys/fs/cgroup");
  for (const auto& d : dirs) EXPECT_TRUE(d.v2);
}

TEST(CgroupDirs, V2InACgroupNamespace) {
  // A container with its own cgroup namespace sees its cgroup as the root.
  const auto dirs = CgroupCpuDirs(
      "600 500 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n", "0::/\n");
  ASSERT_EQ(dirs.size(), 1u);
  EXPECT_EQ(dirs[0].path, "/sys/fs/cgroup");
}

TEST(CgroupDirs, V1ContainerMountShowsItsOwnCgroup) {
  // Docker on a v1 host: the cpu hierarchy's mount shows /docker/ID at /sys/fs/cgroup/cpu,
  // and /proc/self/cgroup names the host's path.
  const char* mountinfo =
      "700 690 0:40 /docker/abc /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n"
      "701 690 0:41 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n"
      "702 690 0:42 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
  const char* cgroup =
      "5:memory:/docker/abc\n"
      "3:cpu:/docker/abc\n"
      "0::/docker/abc\n";
  const auto dirs = CgroupCpuDirs(mountinfo, cgroup);
  ASSERT_EQ(dirs.size(), 4u);
  EXPECT_EQ(dirs[0].path, "/sys/fs/cgroup/cpu");
  EXPECT_FALSE(dirs[0].v2);
  // The v2 hierarchy of a hybrid host (no cpu controller there: its cpu.max is absent).
  EXPECT_EQ(dirs[1].path, "/sys/fs/cgroup/unified/docker/abc");
  EXPECT_EQ(dirs[2].path, "/sys/fs/cgroup/unified/docker");
  EXPECT_EQ(dirs[3].path, "/sys/fs/cgroup/unified");
}

TEST(CgroupDirs, V1CpuCpuacctTogether) {
  const auto dirs = CgroupCpuDirs(
      "40 30 0:35 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
      "4:cpu,cpuacct:/user.slice\n");
  ASSERT_EQ(dirs.size(), 2u);
  EXPECT_EQ(dirs[0].path, "/sys/fs/cgroup/cpu,cpuacct/user.slice");
  EXPECT_EQ(dirs[1].path, "/sys/fs/cgroup/cpu,cpuacct");
}

TEST(CgroupDirs, NothingMountedNothingRead) {
  EXPECT_TRUE(CgroupCpuDirs("", "0::/\n").empty());
  EXPECT_TRUE(CgroupCpuDirs("garbage\n", "garbage\n").empty());
}

TEST(DefaultShards, QuotaCapsTheAffinityMask) {
  EXPECT_EQ(DefaultShards(64, 2.0), 2u);    // --cpus 2 on a 64-core host
  EXPECT_EQ(DefaultShards(64, 1.5), 1u);    // rounded down
  EXPECT_EQ(DefaultShards(64, 0.25), 1u);   // at least one
  EXPECT_EQ(DefaultShards(4, 8.0), 4u);     // the mask is smaller
  EXPECT_EQ(DefaultShards(8, std::nullopt), 8u);
  EXPECT_EQ(DefaultShards(0, std::nullopt), 1u);
  EXPECT_EQ(DefaultShards(1000, std::nullopt), 255u);
}

}  // namespace
}  // namespace ringpeer::cli
