// LMDB's memory: a per-thread recycling cache in front of the heap (issue 15).
//
// LMDB mallocs scratch memory inside every write transaction and frees it when the
// transaction ends: the list of pages it reclaims from its free list (me_pghead, in
// mdb_page_alloc), grown with realloc as it fills. With a commit every few hundred updates
// that was the last heap allocation on a relay's path (`allocs_per_update` 0.010). LMDB has
// no allocator hook, so the build links Debian's static liblmdb.a with its malloc, calloc,
// realloc, free, posix_memalign and strdup renamed (objcopy --redefine-sym, see
// CMakeLists.txt) to the functions below; nothing else in the process goes through them.
//
// Blocks come in power-of-two size classes (64 B to 256 KiB). A freed block goes on its
// class's list in the freeing thread's cache, up to kCachedPerClass blocks, and the next
// request of that class on that thread takes it back: a store's writer thread, whose
// transactions have similar shapes, stops touching the heap after its first few commits.
// Larger blocks (a checkpoint's overflow pages, a large free-page list) use the heap's own
// malloc, realloc and free, and so do blocks beyond a full list. Each block carries a
// 16-byte header naming its class, so a block may be freed on any thread; a block freed
// twice aborts with a message, and under ASan a cached block is poisoned, so LMDB touching
// memory it freed is still reported. calloc takes fresh blocks zeroed from the heap (whose
// new pages stay untouched) and zeroes reused ones. A thread's cache is emptied when the
// thread exits. The most a thread keeps is bounded by the classes its transactions used:
// at most kCachedPerClass blocks each, under 2 MiB in all.
//
// A build on a system without a static liblmdb.a links the shared library instead, without
// the cache (CMakeLists.txt warns; RINGPEER_LMDB_POOLED is then 0).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringpeer::store::lmdb_alloc {

inline constexpr size_t kMinClassBytes = 64;
inline constexpr size_t kMaxClassBytes = size_t{256} << 10;
inline constexpr size_t kCachedPerClass = 4;

// Blocks LMDB has taken from the heap (fresh ones; not those taken from a cache), in all
// threads since the process started. Tests and benchmarks read it.
uint64_t HeapAllocations() noexcept;
// Allocations LMDB made on the calling thread, whether from its cache or from the heap
// (a per-thread count: no shared cache line on every allocation).
uint64_t RequestsOnThisThread() noexcept;

}  // namespace ringpeer::store::lmdb_alloc

// The names liblmdb.a is linked against (see CMakeLists.txt). Same contracts as the C
// library functions they replace.
extern "C" {
void* rp_lmdb_malloc(size_t n);
void* rp_lmdb_calloc(size_t count, size_t size);
void* rp_lmdb_realloc(void* p, size_t n);
void rp_lmdb_free(void* p);
int rp_lmdb_posix_memalign(void** out, size_t align, size_t n);
char* rp_lmdb_strdup(const char* s);
}
