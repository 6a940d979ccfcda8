#include "node/cli/cpu_quota.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace ringpeer::cli {
namespace {

constexpr uint64_t kDefaultPeriodUs = 100'000;

// Debian's Abseil has its own string_view type.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::optional<int64_t> ParseInt(absl::string_view s) {
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

// ReadSmallFile: a /proc or /sys file's text (they are short); nullopt if unreadable.
std::optional<std::string> ReadSmallFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  for (int i = 0; i < 64; ++i) {  // at most 256 KiB
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// A cgroup mount: the part of the hierarchy it shows (root) and where (mount point).
struct Mount {
  std::string root, point;
};

// Under: the directories from the process's cgroup up to the mount point.
void AddChain(const Mount& m, absl::string_view cgroup_path, bool v2,
              std::vector<CgroupCpuDir>* out) {
  std::string rel;
  const absl::string_view root = m.root == "/" ? absl::string_view() : absl::string_view(m.root);
  if (cgroup_path.substr(0, root.size()) == root &&
      (cgroup_path.size() == root.size() || cgroup_path[root.size()] == '/')) {
    rel = std::string(cgroup_path.substr(root.size()));
  }
  // Not under the mount's root (a namespace we cannot map): only the mount point itself.
  while (!rel.empty() && rel.back() == '/') rel.pop_back();
  for (;;) {
    out->push_back({m.point + rel, v2});
    if (rel.empty()) break;
    rel.resize(rel.rfind('/'));
  }
}

}  // namespace

absl::StatusOr<std::optional<double>> ParseCpuMax(std::string_view text) {
  const std::vector<absl::string_view> parts =
      absl::StrSplit(A(Trim(text)), ' ', absl::SkipEmpty());
  if (parts.empty() || parts.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.max: '", A(Trim(text)), "' is not QUOTA PERIOD"));
  }
  uint64_t period = kDefaultPeriodUs;
  if (parts.size() == 2) {
    const auto p = ParseInt(parts[1]);
    if (!p || *p <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("cpu.max: bad period '", parts[1], "'"));
    }
    period = static_cast<uint64_t>(*p);
  }
  if (parts[0] == "max") return std::optional<double>();
  const auto q = ParseInt(parts[0]);
  if (!q || *q <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cpu.max: bad quota '", parts[0], "'"));
  }
  return std::optional<double>(static_cast<double>(*q) / static_cast<double>(period));
}

absl::StatusOr<std::optional<double>> ParseCfsQuota(std::string_view quota,
                                                    std::string_view period) {
  const auto q = ParseInt(A(Trim(quota)));
  if (!q || *q == 0 || *q < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu.cfs_quota_us: bad quota '", A(Trim(quota)), "'"));
  }
  if (*q == -1) return std::optional<double>();
  const auto p = ParseInt(A(Trim(period)));
  if (!p || *p <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cpu.cfs_period_us: bad period '", A(Trim(period)), "'"));
  }
  return std::optional<double>(static_cast<double>(*q) / static_cast<double>(*p));
}

std::vector<CgroupCpuDir> CgroupCpuDirs(std::string_view mountinfo, std::string_view proc_cgroup) {
  std::optional<Mount> v2_mount, v1_cpu_mount;
  for (absl::string_view line : absl::StrSplit(A(mountinfo), '\n', absl::SkipEmpty())) {
    // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    const auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
    const absl::string_view fstype = dash[1], superopts = dash[3];
    Mount m{std::string(f[3]), std::string(f[4])};
    if (fstype == "cgroup2" && !v2_mount) {
      v2_mount = m;
    } else if (fstype == "cgroup" && !v1_cpu_mount) {
      for (absl::string_view opt : absl::StrSplit(superopts, ',')) {
        if (opt == "cpu") v1_cpu_mount = m;
      }
    }
  }
  std::vector<CgroupCpuDir> out;
  for (absl::string_view line : absl::StrSplit(A(proc_cgroup), '\n', absl::SkipEmpty())) {
    // HIERARCHY-ID:CONTROLLERS:PATH (the path may itself hold ':')
    const std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {
      if (v2_mount) AddChain(*v2_mount, f[2], true, &out);
      continue;
    }
    for (absl::string_view c : absl::StrSplit(f[1], ',')) {
      if (c == "cpu" && v1_cpu_mount) AddChain(*v1_cpu_mount, f[2], false, &out);
    }
  }
  return out;
}

std::optional<double> CgroupCpuLimit() {
  const auto mountinfo = ReadSmallFile("/proc/self/mountinfo");
  const auto cgroup = ReadSmallFile("/proc/self/cgroup");
  if (!mountinfo || !cgroup) return std::nullopt;
  std::optional<double> limit;
  for (const CgroupCpuDir& d : CgroupCpuDirs(*mountinfo, *cgroup)) {
    absl::StatusOr<std::optional<double>> cpus = std::optional<double>();
    if (d.v2) {
      const auto max = ReadSmallFile(d.path + "/cpu.max");
      if (!max) continue;
      cpus = ParseCpuMax(*max);
    } else {
      const auto quota = ReadSmallFile(d.path + "/cpu.cfs_quota_us");
      const auto period = ReadSmallFile(d.path + "/cpu.cfs_period_us");
      if (!quota || !period) continue;
      cpus = ParseCfsQuota(*quota, *period);
    }
    if (cpus.ok() && cpus->has_value() && (!limit || **cpus < *limit)) limit = **cpus;
  }
  return limit;
}

uint32_t DefaultShards(size_t affinity_cpus, std::optional<double> cpu_limit) {
  double n = static_cast<double>(std::max<size_t>(affinity_cpus, 1));
  if (cpu_limit) n = std::min(n, std::floor(*cpu_limit + 1e-9));
  return static_cast<uint32_t>(std::clamp(n, 1.0, 255.0));
}

}  // namespace ringpeer::cli
