// See lmdb_alloc.h. The calls into the heap below are ::malloc and friends: this file is
// not linked against the renamed symbols, only liblmdb.a is.
#include "node/store/lmdb_alloc.h"

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringpeer::store::lmdb_alloc {
namespace {

constexpr uint32_t kMagic = 0x4c4d4442;  // "LMDB"
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

std::atomic<uint64_t> g_heap{0};
std::atomic<uint64_t> g_requests{0};

struct Cache {
  void* blocks[kClasses][kCachedPerClass] = {};  // headers of cached blocks
  uint8_t count[kClasses] = {};
  bool gone = false;  // the thread is exiting: frees go to the heap
  ~Cache() {
    gone = true;
    for (uint32_t c = 0; c < kClasses; ++c) {
      while (count[c] > 0) std::free(blocks[c][--count[c]]);
    }
  }
};
thread_local Cache t_cache;

uint32_t ClassOf(size_t n) noexcept {
  if (n <= kMinClassBytes) return 0;
  return static_cast<uint32_t>(std::bit_width(n - 1)) - std::countr_zero(kMinClassBytes);
}

size_t ClassBytes(uint32_t c) noexcept { return kMinClassBytes << c; }

Header* HeaderOf(void* p) noexcept {
  Header* h = reinterpret_cast<Header*>(static_cast<uint8_t*>(p) - kHeaderBytes);
  if (h->magic != kMagic) {
    // Only blocks from these functions reach here (LMDB frees only what it allocated).
    std::fputs("ringpeer: LMDB freed memory it did not allocate through its cache\n", stderr);
    std::abort();
  }
  return h;
}

void* User(Header* h) noexcept { return reinterpret_cast<uint8_t*>(h) + kHeaderBytes; }

void* Allocate(size_t n) noexcept {
  g_requests.fetch_add(1, std::memory_order_relaxed);
  if (n > kMaxClassBytes) {
    if (n > SIZE_MAX - kHeaderBytes) return nullptr;
    auto* h = static_cast<Header*>(std::malloc(kHeaderBytes + n));
    if (h == nullptr) return nullptr;
    g_heap.fetch_add(1, std::memory_order_relaxed);
    *h = {kMagic, kLarge, n};
    return User(h);
  }
  const uint32_t c = ClassOf(n);
  Cache& cache = t_cache;
  if (!cache.gone && cache.count[c] > 0) {
    return User(static_cast<Header*>(cache.blocks[c][--cache.count[c]]));
  }
  auto* h = static_cast<Header*>(std::malloc(kHeaderBytes + ClassBytes(c)));
  if (h == nullptr) return nullptr;
  g_heap.fetch_add(1, std::memory_order_relaxed);
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
  Cache& cache = t_cache;
  if (!cache.gone && cache.count[h->kind] < kCachedPerClass) {
    cache.blocks[h->kind][cache.count[h->kind]++] = h;
    return;
  }
  std::free(h);
}

size_t Usable(const Header* h) noexcept {
  return h->kind == kLarge ? h->value : ClassBytes(h->kind);
}

}  // namespace

uint64_t HeapAllocations() noexcept { return g_heap.load(std::memory_order_relaxed); }
uint64_t Requests() noexcept { return g_requests.load(std::memory_order_relaxed); }

}  // namespace ringpeer::store::lmdb_alloc

namespace la = ringpeer::store::lmdb_alloc;

extern "C" {

void* rp_lmdb_malloc(size_t n) {
  void* p = la::Allocate(n);
  if (p == nullptr) errno = ENOMEM;
  return p;
}

void* rp_lmdb_calloc(size_t count, size_t size) {
  size_t n = 0;
  if (__builtin_mul_overflow(count, size, &n)) {
    errno = ENOMEM;
    return nullptr;
  }
  void* p = rp_lmdb_malloc(n);
  if (p != nullptr) std::memset(p, 0, n);  // a cached block holds old bytes
  return p;
}

void* rp_lmdb_realloc(void* p, size_t n) {
  if (p == nullptr) return rp_lmdb_malloc(n);
  if (n == 0) {
    la::Release(p);
    return nullptr;
  }
  la::Header* h = la::HeaderOf(p);
  if (h->kind == la::kAligned) {
    // LMDB reallocates only its ID lists, never an aligned buffer.
    std::fputs("ringpeer: LMDB reallocated an aligned buffer\n", stderr);
    std::abort();
  }
  const size_t usable = la::Usable(h);
  if (n <= usable) return p;  // the class has room (a list that shrinks keeps its block)
  void* q = rp_lmdb_malloc(n);
  if (q == nullptr) return nullptr;  // p stays valid, as realloc leaves it
  std::memcpy(q, p, usable);
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
  la::g_requests.fetch_add(1, std::memory_order_relaxed);
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
