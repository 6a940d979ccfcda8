// SummaryReporter: Google Benchmark's console table, plus one closing line of key=value
// figures (CPU ns per operation) for scripts, as every benchmark here ends with.
// Single-threaded; used from a benchmark binary's main().
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ringpeer::bench {

class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  // keys: (benchmark function name, key in the summary line), in output order.
  // Colour is off by default so that the closing line starts clean for scripts.
  explicit SummaryReporter(std::vector<std::pair<std::string, std::string>> keys,
                           bool color = false)
      : benchmark::ConsoleReporter(color ? OO_Defaults : OO_Tabular), keys_(std::move(keys)) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      const double ns = run.GetAdjustedCPUTime() *
                        benchmark::GetTimeUnitMultiplier(benchmark::kNanosecond) /
                        benchmark::GetTimeUnitMultiplier(run.time_unit);
      ns_per_op_[run.run_name.function_name] = ns;
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // Value: ns per op of `function_name`, or a negative number when it did not run.
  double Value(const std::string& function_name) const {
    auto it = ns_per_op_.find(function_name);
    return it == ns_per_op_.end() ? -1.0 : it->second;
  }

  // SummaryLine: "prefix key=ns key=ns ..." for the benchmarks that ran.
  std::string SummaryLine(const std::string& prefix) const {
    std::string line = prefix;
    for (const auto& [name, key] : keys_) {
      const double v = Value(name);
      if (v < 0) continue;  // filtered out with --benchmark_filter
      char buf[96];
      std::snprintf(buf, sizeof(buf), " %s=%.1f", key.c_str(), v);
      line += buf;
    }
    return line;
  }

 private:
  std::vector<std::pair<std::string, std::string>> keys_;
  std::map<std::string, double> ns_per_op_;
};

}  // namespace ringpeer::bench
