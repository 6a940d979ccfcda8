// The CPUs a node may use, for the default shard count: its affinity mask, capped by the
// CPU quota of its cgroup (a container started with `--cpus 2` on a 64-core host gets 2
// shards, not 64 threads that the quota would throttle).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ringpeer::cli {

// ParseCpuMax: the contents of a cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for
// no limit; PERIOD may be left out and is then 100000) as CPUs, e.g. "200000 100000" is 2.
// nullopt: no limit. An error for anything else.
absl::StatusOr<std::optional<double>> ParseCpuMax(std::string_view text);

// ParseCfsQuota: cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` as CPUs; a quota of
// -1 is no limit (nullopt).
absl::StatusOr<std::optional<double>> ParseCfsQuota(std::string_view quota,
                                                    std::string_view period);

// A cgroup directory whose CPU limit applies to this process.
struct CgroupCpuDir {
  std::string path;  // e.g. /sys/fs/cgroup/system.slice/x.service
  bool v2 = false;   // cpu.max (v2) or cpu.cfs_quota_us + cpu.cfs_period_us (v1)
};

// CgroupCpuDirs: from the text of /proc/self/mountinfo and /proc/self/cgroup, the
// directories to read, the process's own cgroup first and then each parent up to the
// mount point (a parent's limit caps its children). Both hierarchies are listed on a
// hybrid v1/v2 host; directories without the files are skipped when read.
std::vector<CgroupCpuDir> CgroupCpuDirs(std::string_view mountinfo, std::string_view proc_cgroup);

// CgroupCpuLimit: the smallest CPU limit of those directories, read from /proc and /sys;
// nullopt when there is none (or nothing could be read).
std::optional<double> CgroupCpuLimit();

// DefaultShards: one shard per CPU of the affinity mask, but no more than the cgroup
// limit allows (rounded down: 1.5 CPUs is 1 shard), and at least one.
uint32_t DefaultShards(size_t affinity_cpus, std::optional<double> cpu_limit);

}  // namespace ringpeer::cli
