#include "node/cli/flags.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

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

struct Setting {
  std::vector<std::string> values;
  std::string source;
};

// ReadConfigFile: `name = value` lines; see flags.h.
absl::StatusOr<std::map<std::string, Setting>> ReadConfigFile(std::span<const FlagSpec> specs,
                                                              const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("config file ", path, ": cannot open it"));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  if (text.size() > kConfigFileBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, " is larger than ", kConfigFileBytesMax, " bytes"));
  }
  std::map<std::string, Setting> out;
  int line_no = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line_no;
    const std::string where = absl::StrCat(path, ":", line_no);
    absl::string_view line = raw;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected 'name = value'"));
    }
    const std::string name(absl::StripAsciiWhitespace(line.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    const FlagSpec* spec = Find(specs, name);
    if (spec == nullptr || name == "config") {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown setting '", name, "'"));
    }
    Setting& s = out[spec->name];
    if (s.source.empty()) s.source = absl::StrCat("config ", where);
    if (spec->kind == FlagSpec::Kind::kList) {
      for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
        s.values.emplace_back(absl::StripAsciiWhitespace(part));
      }
    } else if (spec->kind == FlagSpec::Kind::kSwitch) {
      if (value != "true" && value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": '", name, "' is a switch: true or false"));
      }
      s.values.clear();
      if (value == "true") s.values.emplace_back("true");
    } else {
      s.values.assign(1, value);
    }
  }
  return out;
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
  // The config file, if the table has a "config" flag and it was given (flag or env).
  std::map<std::string, Setting> file;
  if (const FlagSpec* cs = Find(specs, "config"); cs != nullptr) {
    std::string path;
    if (auto it = given.find("config"); it != given.end()) {
      path = it->second.back();
    } else if (const char* env = cs->env ? std::getenv(cs->env) : nullptr; env && *env) {
      path = env;
    }
    if (!path.empty()) {
      auto read = ReadConfigFile(specs, path);
      if (!read.ok()) return read.status();
      file = std::move(*read);
    }
  }
  for (const FlagSpec& s : specs) {
    if (auto it = given.find(s.name); it != given.end()) {
      f.values_[s.name] = it->second;
      f.sources_[s.name] = "flag";
      continue;
    }
    const char* env = s.env == nullptr ? nullptr : std::getenv(s.env);
    if (env == nullptr || *env == '\0') {
      if (auto it = file.find(s.name); it != file.end() && !it->second.values.empty()) {
        f.values_[s.name] = it->second.values;
        f.sources_[s.name] = it->second.source;
      }
      continue;
    }
    f.sources_[s.name] = absl::StrCat("env ", s.env);
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

std::string Flags::Source(const std::string& name) const {
  auto it = sources_.find(name);
  return it == sources_.end() ? "default" : it->second;
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

absl::StatusOr<uint64_t> ParseBytes(const std::string& flag, const std::string& text,
                                    uint64_t min, uint64_t max) {
  std::string digits = text;
  int shift = 0;
  for (const auto& [suffix, bits] : {std::pair<const char*, int>{"KiB", 10}, {"MiB", 20},
                                     {"GiB", 30}, {"TiB", 40}, {"K", 10}, {"M", 20},
                                     {"G", 30}, {"T", 40}}) {
    const std::string_view sv(suffix);
    if (digits.size() > sv.size() && std::string_view(digits).substr(digits.size() - sv.size()) == sv) {
      digits.resize(digits.size() - sv.size());
      shift = bits;
      break;
    }
  }
  if (digits.empty() || digits.size() > 15 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": '", text, "' is not a size (bytes, or a number with K, M, G or T)"));
  }
  const uint64_t n = std::strtoull(digits.c_str(), nullptr, 10);
  if (shift > 0 && n > (max >> shift)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", text, " is more than ", max, " bytes"));
  }
  const uint64_t v = n << shift;
  if (v < min || v > max) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", text, " (", v,
                                                   " bytes) is out of range [", min, ", ",
                                                   max, "]"));
  }
  return v;
}

}  // namespace ringpeer::cli
