// FutexWait / FutexWake: sleeping on a 32-bit atomic word until another thread changes it,
// for the few places where an application thread waits for a shard (a control command's
// answer, a client's event ring) and must wake as soon as it is answered rather than poll
// a clock. The shard's side is one system call, and only when it has something to say.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace ringpeer::base {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t),
              "a futex word is a plain 32-bit integer");

// FutexWait: sleeps while `*word == expected`, at most `timeout_ms` (and returns early on
// a wake or a signal: the caller looks at the word again). Returns at once when the word
// already differs.
inline void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeout_ms) noexcept {
  if (timeout_ms <= 0) return;
  timespec ts{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1'000'000};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, &ts,
          nullptr, 0);
}

// FutexWake: wakes every thread sleeping on `word` (after the caller changed it).
inline void FutexWake(std::atomic<uint32_t>* word) noexcept {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
          nullptr, 0);
}

}  // namespace ringpeer::base
