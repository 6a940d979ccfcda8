// Log: one line per event an operator cares about (start, bind, peers gained and lost,
// limits hit), in text or JSON, with a level threshold.
//
//   base::Log(base::LogLevel::kInfo, "peer gained").Field("id", hex).Field("addr", a);
//
// The line is written when the temporary is destroyed, with one write(2) to stderr, so
// lines from different threads never interleave (stderr is unbuffered; a line is far
// below PIPE_BUF). Text:  2024-05-01T12:00:00.123Z INFO peer gained id=ab12 addr=10.0.0.1:7700
// JSON:  {"ts":"2024-05-01T12:00:00.123Z","level":"info","msg":"peer gained","id":"ab12",...}
//
// Control path only. A shard never logs: it counts (ShardCounters), and the control
// thread turns counter changes into aggregated lines, so a flood can never become a flood
// of log lines and a slow stderr can never stall a shard. Thread-safe: the settings are
// atomics set once at start-up; each Log object is used by one thread.
#pragma once

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace ringpeer::base {

enum class LogLevel : uint8_t { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat : uint8_t { kText = 0, kJson = 1 };

inline std::atomic<LogLevel> g_log_level{LogLevel::kInfo};
inline std::atomic<LogFormat> g_log_format{LogFormat::kText};

inline void SetLogLevel(LogLevel l) { g_log_level.store(l, std::memory_order_relaxed); }
inline void SetLogFormat(LogFormat f) { g_log_format.store(f, std::memory_order_relaxed); }

inline const char* LogLevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

// ParseLogLevel: "debug", "info", "warn" or "error"; nullopt otherwise.
inline std::optional<LogLevel> ParseLogLevel(std::string_view s) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (s == LogLevelName(l)) return l;
  }
  if (s == "warning") return LogLevel::kWarn;
  return std::nullopt;
}

// ParseLogFormat: "text" or "json"; nullopt otherwise.
inline std::optional<LogFormat> ParseLogFormat(std::string_view s) {
  if (s == "text") return LogFormat::kText;
  if (s == "json") return LogFormat::kJson;
  return std::nullopt;
}

class Log {
 public:
  Log(LogLevel level, std::string_view message)
      : enabled_(level >= g_log_level.load(std::memory_order_relaxed)),
        json_(g_log_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
    if (!enabled_) return;
    const std::string ts = Timestamp();
    if (json_) {
      line_ = "{\"ts\":\"" + ts + "\",\"level\":\"" + LogLevelName(level) + "\",\"msg\":";
      AppendJsonString(message);
    } else {
      line_ = ts + " " + UpperName(level) + " ";
      line_.append(message);
    }
  }
  ~Log() {
    if (!enabled_) return;
    line_ += json_ ? "}\n" : "\n";
    // One write: a line is never torn between threads. A failed or short write to stderr
    // has nowhere better to be reported; the line is lost.
    const ssize_t n = ::write(STDERR_FILENO, line_.data(), line_.size());
    (void)n;
  }
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  // Field: a key=value pair. Keys are [a-z_]; text values with spaces are quoted.
  Log& Field(std::string_view key, std::string_view value) {
    if (!enabled_) return *this;
    if (json_) {
      line_ += ',';
      AppendJsonString(key);
      line_ += ':';
      AppendJsonString(value);
    } else {
      line_ += ' ';
      line_.append(key);
      line_ += '=';
      const bool quote = value.empty() || value.find_first_of(" \"=") != std::string_view::npos;
      if (quote) {
        AppendJsonString(value);  // a quoted, escaped string reads the same in text
      } else {
        line_.append(value);
      }
    }
    return *this;
  }
  Log& Field(std::string_view key, const char* value) {
    return Field(key, std::string_view(value));
  }
  Log& Field(std::string_view key, const std::string& value) {
    return Field(key, std::string_view(value));
  }
  // Numbers are written bare in JSON, so that log tools can compare them.
  Log& Field(std::string_view key, uint64_t value) { return Number(key, std::to_string(value)); }
  Log& Field(std::string_view key, int64_t value) { return Number(key, std::to_string(value)); }
  Log& Field(std::string_view key, uint32_t value) { return Field(key, uint64_t{value}); }
  Log& Field(std::string_view key, int value) { return Field(key, int64_t{value}); }

 private:
  static const char* UpperName(LogLevel l) {
    switch (l) {
      case LogLevel::kDebug: return "DEBUG";
      case LogLevel::kInfo: return "INFO";
      case LogLevel::kWarn: return "WARN";
      case LogLevel::kError: return "ERROR";
    }
    return "INFO";
  }
  static std::string Timestamp() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t;
    gmtime_r(&ts.tv_sec, &t);
    char buf[80];  // roomy: the compiler cannot know tm fields are small
    std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                  t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                  static_cast<int>(ts.tv_nsec / 1'000'000));
    return buf;
  }
  Log& Number(std::string_view key, const std::string& digits) {
    if (!enabled_) return *this;
    if (json_) {
      line_ += ',';
      AppendJsonString(key);
      line_ += ':';
      line_ += digits;
    } else {
      line_ += ' ';
      line_.append(key);
      line_ += '=';
      line_ += digits;
    }
    return *this;
  }
  void AppendJsonString(std::string_view s) {
    line_ += '"';
    for (char c : s) {
      switch (c) {
        case '"': line_ += "\\\""; break;
        case '\\': line_ += "\\\\"; break;
        case '\n': line_ += "\\n"; break;
        case '\t': line_ += "\\t"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            line_ += buf;
          } else {
            line_ += c;
          }
      }
    }
    line_ += '"';
  }

  const bool enabled_;
  const bool json_;
  std::string line_;
};

}  // namespace ringpeer::base
