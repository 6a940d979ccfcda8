// The counting allocator of tests/sim/heap.h. Linked into the simulator binaries only.
#include "tests/sim/heap.h"

#include <cstdlib>
#include <new>

#include "base/block_pool.h"

namespace ringpeer::sim::heap {
namespace {

struct alignas(16) Header {
  uint64_t size;
  int32_t owner;
  uint32_t magic;
};
static_assert(sizeof(Header) == 16);
constexpr uint32_t kMagic = 0x48454150;  // "HEAP"

// Room logs grow into base::BlockPool, which the counting operator new would not see: the
// simulators reserve no pool range, so every block falls back to this heap and is charged.
const bool g_pool_off = ringpeer::base::BlockPool::SetGlobalSpace(0);

int g_owner = kShared;
// Index 0: kDisk, 1: kShared, 2 + i: node i.
int64_t g_bytes[kOwnersMax + 2] = {};
int64_t g_total = 0;

int Slot(int owner) noexcept {
  if (owner < kDisk || owner >= kOwnersMax) return 1;
  return owner + 2;
}

void* Allocate(size_t n) {
  void* raw = std::malloc(sizeof(Header) + (n == 0 ? 1 : n));
  if (raw == nullptr) std::abort();  // the simulator cannot go on without memory
  Header* h = static_cast<Header*>(raw);
  h->size = n;
  h->owner = g_owner;
  h->magic = kMagic;
  g_bytes[Slot(g_owner)] += static_cast<int64_t>(n);
  g_total += static_cast<int64_t>(n);
  return h + 1;
}

void Release(void* p) noexcept {
  if (p == nullptr) return;
  Header* h = static_cast<Header*>(p) - 1;
  if (h->magic != kMagic) std::abort();  // not ours: a mismatched new/delete
  h->magic = 0;
  g_bytes[Slot(h->owner)] -= static_cast<int64_t>(h->size);
  g_total -= static_cast<int64_t>(h->size);
  std::free(h);
}

}  // namespace

int Owner() noexcept { return g_owner; }
void SetOwner(int owner) noexcept { g_owner = owner; }
int64_t Bytes(int owner) noexcept { return g_bytes[Slot(owner)]; }
int64_t Total() noexcept { return g_total; }

}  // namespace ringpeer::sim::heap

void* operator new(size_t n) { return ringpeer::sim::heap::Allocate(n); }
void* operator new[](size_t n) { return ringpeer::sim::heap::Allocate(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return ringpeer::sim::heap::Allocate(n);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return ringpeer::sim::heap::Allocate(n);
}
void operator delete(void* p) noexcept { ringpeer::sim::heap::Release(p); }
void operator delete[](void* p) noexcept { ringpeer::sim::heap::Release(p); }
void operator delete(void* p, size_t) noexcept { ringpeer::sim::heap::Release(p); }
void operator delete[](void* p, size_t) noexcept { ringpeer::sim::heap::Release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { ringpeer::sim::heap::Release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  ringpeer::sim::heap::Release(p);
}
