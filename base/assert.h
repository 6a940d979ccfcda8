// Always-on assertions (STYLE.md section 6).
//
// RP_ASSERT is checked in every build: a broken invariant in a network daemon is better
// as a crash with a message than as silent corruption. RP_DASSERT is for expensive checks
// and runs only in debug, sanitizer and simulator builds (RP_DEBUG_ASSERTS).
// Never assert on anything a peer controls; that is a Verdict.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace ringpeer::base {

[[noreturn]] inline void AssertFail(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "ringpeer: assertion failed: %s (%s:%d)\n", expr, file, line);
  std::abort();
}

}  // namespace ringpeer::base

#define RP_ASSERT(cond)                                              \
  do {                                                               \
    if (__builtin_expect(!(cond), 0)) {                              \
      ::ringpeer::base::AssertFail(#cond, __FILE__, __LINE__);       \
    }                                                                \
  } while (0)

#if defined(RP_DEBUG_ASSERTS)
#define RP_DASSERT(cond) RP_ASSERT(cond)
#else
#define RP_DASSERT(cond) \
  do {                   \
  } while (0)
#endif
