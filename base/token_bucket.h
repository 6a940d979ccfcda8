// TokenBucket: a rate limit with a burst, on a caller-supplied clock.
//
// Time is passed in (microseconds on any monotonic clock) so that sans-I/O code and the
// simulator can use it. Fixed-point arithmetic: no floating point on the hot path.
// A value type; shard-local, not thread-safe.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ringpeer::base {

class TokenBucket {
 public:
  TokenBucket() = default;
  // rate_per_s: tokens added per second; burst: the most tokens held. Starts full.
  TokenBucket(uint32_t rate_per_s, uint32_t burst, int64_t now_us) noexcept
      : rate_per_s_(rate_per_s), burst_micro_(uint64_t{burst} * kMicro),
        tokens_micro_(burst_micro_), last_us_(now_us) {}

  // TryTake: takes `n` tokens if there are that many after refilling to `now_us`.
  bool TryTake(int64_t now_us, uint32_t n = 1) noexcept {
    Refill(now_us);
    const uint64_t need = uint64_t{n} * kMicro;
    if (tokens_micro_ < need) return false;
    tokens_micro_ -= need;
    return true;
  }

  // Tokens: whole tokens available now (for tests and status).
  uint64_t Tokens(int64_t now_us) noexcept {
    Refill(now_us);
    return tokens_micro_ / kMicro;
  }

 private:
  // Tokens are kept in millionths so that rate * elapsed_us needs no division.
  static constexpr uint64_t kMicro = 1'000'000;
  // Elapsed time is capped so that rate * elapsed never overflows 64 bits.
  static constexpr int64_t kElapsedUsMax = 60'000'000;

  void Refill(int64_t now_us) noexcept {
    if (now_us <= last_us_) return;  // a clock that stepped back adds nothing
    const int64_t elapsed = std::min(now_us - last_us_, kElapsedUsMax);
    last_us_ = now_us;
    tokens_micro_ = std::min(burst_micro_, tokens_micro_ + uint64_t(elapsed) * rate_per_s_);
  }

  uint64_t rate_per_s_ = 0;
  uint64_t burst_micro_ = 0;
  uint64_t tokens_micro_ = 0;
  int64_t last_us_ = 0;
};

}  // namespace ringpeer::base
