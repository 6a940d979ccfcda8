#include "node/cli/flags.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ringpeer::cli {
namespace {

const FlagSpec* Find(std::span<const FlagSpec> specs, std::string_view name) {
  for (const FlagSpec& s : specs) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<Flags> Flags::Parse(std::span<const FlagSpec> specs,
                                   std::span<const char* const> args, size_t positional_max) {
  Flags f;
  std::map<std::string, std::vector<std::string>> given;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string a = args[i];
    if (a == "-h" || a == "--help") {
      f.help_ = true;
      continue;
    }
    if (a.size() < 2 || a.substr(0, 2) != "--") {
      if (a.size() > 1 && a[0] == '-') {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag ", a));
      }
      if (f.positional_.size() >= positional_max) {
        return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", a, "'"));
      }
      f.positional_.emplace_back(a);
      continue;
    }
    std::string body = a.substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      inline_value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    const FlagSpec* spec = Find(specs, body);
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", body));
    if (spec->kind == FlagSpec::Kind::kSwitch) {
      if (inline_value) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", body, " takes no value"));
      }
      given[spec->name].push_back("true");
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", body, " needs a value (", spec->value_name, ")"));
    }
    given[spec->name].push_back(value);
  }
  for (const FlagSpec& s : specs) {
    if (auto it = given.find(s.name); it != given.end()) {
      f.values_[s.name] = it->second;
      continue;
    }
    if (s.env == nullptr) continue;
    const char* env = std::getenv(s.env);
    if (env == nullptr || *env == '\0') continue;
    if (s.kind == FlagSpec::Kind::kList) {
      for (absl::string_view part : absl::StrSplit(env, ',', absl::SkipWhitespace())) {
        f.values_[s.name].emplace_back(std::string(absl::StripAsciiWhitespace(part)));
      }
    } else {
      f.values_[s.name].emplace_back(env);
    }
  }
  return f;
}

std::optional<std::string> Flags::Value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Flags::List(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string Flags::Help(std::span<const FlagSpec> specs) {
  std::string out;
  for (const FlagSpec& s : specs) {
    std::string left = absl::StrCat("  --", s.name);
    if (s.kind != FlagSpec::Kind::kSwitch) absl::StrAppend(&left, " ", s.value_name);
    if (left.size() < 26) left.resize(26, ' ');
    absl::StrAppend(&out, left, " ", s.help);
    if (s.kind == FlagSpec::Kind::kList) absl::StrAppend(&out, " (repeatable)");
    if (s.default_text) absl::StrAppend(&out, " [default: ", s.default_text, "]");
    if (s.env) absl::StrAppend(&out, " [env: ", s.env, "]");
    out += "\n";
  }
  return out;
}

absl::StatusOr<uint64_t> ParseUint(const std::string& flag, const std::string& text,
                                   uint64_t min, uint64_t max) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": '", text, "' is not a whole number"));
  }
  const uint64_t v = std::strtoull(text.c_str(), nullptr, 10);
  if (v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", v, " is out of range [", min, ", ", max, "]"));
  }
  return v;
}

}  // namespace ringpeer::cli
