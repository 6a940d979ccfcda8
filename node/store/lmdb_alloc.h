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
// Larger blocks, and blocks beyond a full list, go back to the heap. Each block carries a
// 16-byte header naming its class, so a block may be freed on any thread. A thread's cache
// is emptied when the thread exits. The most a thread keeps is bounded by the classes its
// transactions used (at most kCachedPerClass blocks each).
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
// Requests LMDB made (allocations, whether from a cache or from the heap).
uint64_t Requests() noexcept;

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
