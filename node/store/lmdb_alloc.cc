// See lmdb_alloc.h. The calls into the heap below are ::malloc and friends: this file is
// not linked against the renamed symbols, only liblmdb.a is.
#include "node/store/lmdb_alloc.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/sanitizers.h"
#if RINGPEER_ASAN
#include <sanitizer/asan_interface.h>
// A cached block is poisoned, so that ASan still reports LMDB touching memory it freed.
#define RP_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define RP_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define RP_POISON(p, n) ((void)(p), (void)(n))
#define RP_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace ringpeer::store::lmdb_alloc {
namespace {

constexpr uint32_t kMagic = 0x4c4d4442;        // "LMDB": a block LMDB holds
constexpr uint32_t kMagicCached = 0x4c4d4443;  // a block in a cache: freeing it again aborts
constexpr uint32_t kClasses = std::countr_zero(kMaxClassBytes) - std::countr_zero(kMinClassBytes) + 1;
constexpr uint32_t kLarge = 0xfffe;    // taken from the heap for its size, never cached
constexpr uint32_t kAligned = 0xffff;  // posix_memalign: value is the offset from the base
constexpr size_t kHeaderBytes = 16;

struct Header {
  uint32_t magic;
  uint32_t kind;   // a size class, kLarge or kAligned
  uint64_t value;  // kLarge: the usable size; kAligned: offset of the block from its base
};
static_assert(sizeof(Header) == kHeaderBytes);

std::atomic<uint64_t> g_heap{0};  // rare (a block fresh from the heap): one shared counter
thread_local uint64_t t_requests = 0;

struct Cache {
  Header* blocks[kClasses][kCachedPerClass] = {};
  uint8_t count[kClasses] = {};
  ~Cache();
};
thread_local Cache t_cache;
// Set when this thread's cache is destroyed (thread exit): later frees go to the heap. A
// separate, trivially destructible flag, so it is never read from a destroyed object.
thread_local bool t_cache_gone = false;

Cache::~Cache() {
  t_cache_gone = true;
  for (uint32_t c = 0; c < kClasses; ++c) {
    while (count[c] > 0) std::free(blocks[c][--count[c]]);
  }
}

uint32_t ClassOf(size_t n) noexcept {
  if (n <= kMinClassBytes) return 0;
  return static_cast<uint32_t>(std::bit_width(n - 1)) - std::countr_zero(kMinClassBytes);
}

size_t ClassBytes(uint32_t c) noexcept { return kMinClassBytes << c; }

[[noreturn]] void Die(const char* what) noexcept {
  std::fprintf(stderr, "ringpeer: LMDB's allocator: %s\n", what);
  std::abort();
}

Header* HeaderOf(void* p) noexcept {
  Header* h = reinterpret_cast<Header*>(static_cast<uint8_t*>(p) - kHeaderBytes);
  if (h->magic == kMagicCached) Die("a block was freed twice");
  // Only blocks from these functions reach here (LMDB frees only what it allocated).
  if (h->magic != kMagic) Die("a block it did not allocate was freed");
  return h;
}

void* User(Header* h) noexcept { return reinterpret_cast<uint8_t*>(h) + kHeaderBytes; }

// Allocate: `n` bytes, zeroed when `zero` (a fresh block from calloc, a reused one by hand).
void* Allocate(size_t n, bool zero) noexcept {
  ++t_requests;
  if (n > kMaxClassBytes) {
    if (n > SIZE_MAX - kHeaderBytes) return nullptr;
    void* raw = zero ? std::calloc(1, kHeaderBytes + n) : std::malloc(kHeaderBytes + n);
    if (raw == nullptr) return nullptr;
    g_heap.fetch_add(1, std::memory_order_relaxed);
    auto* h = static_cast<Header*>(raw);
    *h = {kMagic, kLarge, n};
    return User(h);
  }
  const uint32_t c = ClassOf(n);
  if (!t_cache_gone) {
    Cache& cache = t_cache;
    if (cache.count[c] > 0) {
      Header* h = cache.blocks[c][--cache.count[c]];
      h->magic = kMagic;
      RP_UNPOISON(User(h), ClassBytes(c));
      if (zero) std::memset(User(h), 0, n);
      return User(h);
    }
  }
  void* raw = zero ? std::calloc(1, kHeaderBytes + ClassBytes(c))
                   : std::malloc(kHeaderBytes + ClassBytes(c));
  if (raw == nullptr) return nullptr;
  g_heap.fetch_add(1, std::memory_order_relaxed);
  auto* h = static_cast<Header*>(raw);
  *h = {kMagic, c, 0};
  return User(h);
}

void Release(void* p) noexcept {
  if (p == nullptr) return;
  Header* h = HeaderOf(p);
  if (h->kind == kAligned) {
    std::free(reinterpret_cast<uint8_t*>(p) - h->value);
    return;
  }
  if (h->kind == kLarge) {
    std::free(h);
    return;
  }
  if (!t_cache_gone) {
    Cache& cache = t_cache;
    if (cache.count[h->kind] < kCachedPerClass) {
      h->magic = kMagicCached;
      RP_POISON(User(h), ClassBytes(h->kind));
      cache.blocks[h->kind][cache.count[h->kind]++] = h;
      return;
    }
  }
  std::free(h);
}

}  // namespace

uint64_t HeapAllocations() noexcept { return g_heap.load(std::memory_order_relaxed); }
uint64_t RequestsOnThisThread() noexcept { return t_requests; }

}  // namespace ringpeer::store::lmdb_alloc

namespace la = ringpeer::store::lmdb_alloc;

extern "C" {

void* rp_lmdb_malloc(size_t n) {
  void* p = la::Allocate(n, /*zero=*/false);
  if (p == nullptr) errno = ENOMEM;
  return p;
}

void* rp_lmdb_calloc(size_t count, size_t size) {
  size_t n = 0;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return nullptr;
  }
  // Zeroed by the heap when fresh (glibc leaves new mapped pages untouched: LMDB's 2 MiB
  // dirty list per environment stays out of memory until used), by hand when reused.
  void* p = la::Allocate(n, /*zero=*/true);
  if (p == nullptr) errno = ENOMEM;
  return p;
}

void* rp_lmdb_realloc(void* p, size_t n) {
  if (p == nullptr) return rp_lmdb_malloc(n);
  if (n == 0) {
    la::Release(p);
    return nullptr;
  }
  la::Header* h = la::HeaderOf(p);
  if (h->kind == la::kAligned) la::Die("an aligned buffer was reallocated");  // LMDB never does
  if (h->kind == la::kLarge && n > la::kMaxClassBytes) {
    // The heap's own realloc, growing or shrinking (LMDB shrinks its free-page list after a
    // large transaction, mdb_midl_shrink; glibc then gives the memory back or remaps).
    if (n > SIZE_MAX - la::kHeaderBytes) {
      errno = ENOMEM;
      return nullptr;
    }
    auto* moved = static_cast<la::Header*>(std::realloc(h, la::kHeaderBytes + n));
    if (moved == nullptr) {
      errno = ENOMEM;
      return nullptr;  // p stays valid, as realloc leaves it
    }
    moved->value = n;
    return la::User(moved);
  }
  const size_t usable = h->kind == la::kLarge ? h->value : la::ClassBytes(h->kind);
  // A class block with room stays; one that would shrink to a smaller class stays too (it
  // goes back to its class's cache when freed).
  if (h->kind != la::kLarge && n <= usable) return p;
  void* q = rp_lmdb_malloc(n);
  if (q == nullptr) return nullptr;  // p stays valid
  std::memcpy(q, p, std::min(usable, n));
  la::Release(p);
  return q;
}

void rp_lmdb_free(void* p) { la::Release(p); }

int rp_lmdb_posix_memalign(void** out, size_t align, size_t n) {
  // Environment copies only (page-aligned buffers): straight from the heap, with the header
  // just below the aligned block. `align` is a power of two of at least sizeof(void*).
  if (align < la::kHeaderBytes) align = la::kHeaderBytes;
  if (n > SIZE_MAX - align) return ENOMEM;
  void* base = nullptr;
  const int rc = posix_memalign(&base, align, align + n);
  if (rc != 0) return rc;
  la::g_heap.fetch_add(1, std::memory_order_relaxed);
  ++la::t_requests;
  auto* user = static_cast<uint8_t*>(base) + align;
  *reinterpret_cast<la::Header*>(user - la::kHeaderBytes) = {la::kMagic, la::kAligned, align};
  *out = user;
  return 0;
}

char* rp_lmdb_strdup(const char* s) {
  const size_t n = std::strlen(s) + 1;
  auto* p = static_cast<char*>(rp_lmdb_malloc(n));
  if (p != nullptr) std::memcpy(p, s, n);
  return p;
}

}  // extern "C"
