// Flags: command-line flags with RINGPEER_* environment fallbacks and generated help.
//
// Precedence: a flag on the command line, then its environment variable, then the
// config file, then the default. The config file is named by a flag called "config" (or
// its environment variable) when the spec table has one; it holds one `name = value` per
// line with the flag's name, `#` comments, and lists as repeated lines or comma-separated
// values. An unknown name in the file is an error naming the file and line. `--name value` and `--name=value` both work; list flags may repeat, and their
// environment variable is comma-separated. An unknown flag, a missing value or a stray
// argument is an error with one clear line. Control path; not thread-safe.
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ringpeer::cli {

struct FlagSpec {
  enum class Kind { kValue, kList, kSwitch };
  const char* name;        // without dashes: "data-dir"
  Kind kind;
  const char* env;         // "RINGPEER_DATA_DIR", or nullptr
  const char* value_name;  // "DIR" (for help)
  const char* default_text;  // shown in help, or nullptr
  const char* help;
};

class Flags {
 public:
  // Parse: args are what follows the sub-command. `positional_max` arguments that are not
  // flags are allowed.
  static absl::StatusOr<Flags> Parse(std::span<const FlagSpec> specs,
                                     std::span<const char* const> args, size_t positional_max);

  // Value: the last value given (flag, then env), or nullopt.
  std::optional<std::string> Value(const std::string& name) const;
  std::vector<std::string> List(const std::string& name) const;
  bool Switch(const std::string& name) const { return Value(name).has_value(); }
  bool help() const { return help_; }
  // Source: where the value came from: "flag", "env RINGPEER_X", "config FILE:LINE", or
  // "default" when none was given.
  std::string Source(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  // Help: the flag table for --help.
  static std::string Help(std::span<const FlagSpec> specs);

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::map<std::string, std::string> sources_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// Longest config file accepted: a config is a few dozen lines; anything bigger is a mistake.
inline constexpr size_t kConfigFileBytesMax = 64 * 1024;

// ParseUint: a decimal in [min, max], or an error naming the flag.
absl::StatusOr<uint64_t> ParseUint(const std::string& flag, const std::string& text,
                                   uint64_t min, uint64_t max);

// ParseBytes: a size in bytes, with an optional binary suffix K, M, G or T (KiB, MiB, GiB,
// TiB; "KiB" etc. also accepted), in [min, max], or an error naming the flag.
absl::StatusOr<uint64_t> ParseBytes(const std::string& flag, const std::string& text,
                                    uint64_t min, uint64_t max);

}  // namespace ringpeer::cli
