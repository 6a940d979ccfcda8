// Which sanitizer this translation unit is built with, detected once for every folder:
// GCC says so with __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, clang with __has_feature.
//
//   RINGPEER_ASAN       1 under AddressSanitizer, else 0 (poison a pool's freed blocks)
//   RINGPEER_SANITIZED  1 under ASan, TSan or MSan, else 0 (their allocator is the hook:
//                       a test or benchmark that replaces malloc or operator new stands aside)
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define RINGPEER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RINGPEER_ASAN 1
#endif
#endif
#ifndef RINGPEER_ASAN
#define RINGPEER_ASAN 0
#endif

#if RINGPEER_ASAN || defined(__SANITIZE_THREAD__)
#define RINGPEER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define RINGPEER_SANITIZED 1
#endif
#endif
#ifndef RINGPEER_SANITIZED
#define RINGPEER_SANITIZED 0
#endif
