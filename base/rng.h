// Rng: a small, fast, seedable PRNG (xoshiro256**), injected wherever randomness is needed.
//
// The sans-I/O overlay and the simulator take an Rng so that a seed replays a run
// exactly. Production seeds it from the system CSPRNG; values that must be unpredictable
// to an attacker (ping challenges) are therefore as good as that seed. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace ringpeer::base {

class Rng {
 public:
  explicit Rng(uint64_t seed) noexcept {
    // splitmix64 expands the seed into the 256-bit state.
    for (uint64_t& s : s_) {
      seed += 0x9E3779B97F4A7C15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      s = z ^ (z >> 31);
    }
  }

  uint64_t Next() noexcept {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform: a value in [0, n). REQUIRES: n > 0. (Multiply-shift; bias < 2^-32 for our n.)
  uint64_t Uniform(uint64_t n) noexcept {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

  void Fill(std::span<uint8_t> out) noexcept {
    size_t i = 0;
    for (; i + 8 <= out.size(); i += 8) {
      uint64_t v = Next();
      std::memcpy(out.data() + i, &v, 8);
    }
    if (i < out.size()) {
      uint64_t v = Next();
      std::memcpy(out.data() + i, &v, out.size() - i);
    }
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace ringpeer::base
