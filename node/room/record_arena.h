// RecordArena: where a room's log keeps the bytes of its updates.
//
// A relay copies each update it places into the log once, and keeps it until a checkpoint
// covers it (pruning) or a rotation kills it. With one heap block per record that was one
// allocation per relayed update (issue 15: `allocs_per_update`). Here records are packed
// into 64 KiB chunks, 16-byte aligned (FlatBuffers reads them in place, as it read the
// heap copy). A chunk counts the bytes still live in it; when the last of them is freed the
// chunk goes on a free list and the next chunk needed is taken from there, so a relay that
// prunes as fast as it places allocates nothing once its chunks exist. A relay prunes in
// steps (every retention / 16, swarm_prune.cc), each freeing a slice of the log at once:
// the free list keeps up to a quarter as many empty chunks as are in use (at least
// kFreeChunksKept), so that the log growing back after a prune takes them again instead
// of the heap; the rest go back to the heap, and a log that shrinks gives back the ones
// beyond its new quarter.
//
// A room's first chunk is 4 KiB and each next one twice the last, up to 64 KiB, so that a
// relay of many quiet rooms does not hold 64 KiB for each; only 64 KiB chunks are kept
// for reuse.
//
// A record larger than a quarter chunk gets a chunk of its own, returned when it is freed
// (updates fit in a datagram; this is for the odd large record, not the steady state).
//
// Chunks, and the chunk table once it is 4 KiB or more, come from the process's BlockPool
// (base/block_pool.h), not the heap: a log that grows takes address space reserved at
// start, and a chunk given back is the next one of its size that any room takes.
//
// Not thread-safe: one room, one shard.

#ifndef RINGPEER_NODE_ROOM_RECORD_ARENA_H_
#define RINGPEER_NODE_ROOM_RECORD_ARENA_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "base/assert.h"
#include "base/block_pool.h"

namespace ringpeer::room {

class RecordArena {
 public:
  static constexpr size_t kChunkBytes = 64 * 1024;
  static constexpr size_t kFirstChunkBytes = 4 * 1024;
  static constexpr size_t kAlign = 16;
  static constexpr size_t kFreeChunksKept = 1;   // at least
  static constexpr size_t kFreeChunksShare = 4;  // at most in use / this many
  static constexpr uint32_t kNoChunk = 0xffffffffu;

  // Ref: one record in the arena (or nothing). Trivially copyable; the arena owns the bytes.
  struct Ref {
    const uint8_t* ptr = nullptr;
    uint32_t len = 0;
    uint32_t chunk = kNoChunk;
    const uint8_t* data() const noexcept { return ptr; }
    size_t size() const noexcept { return len; }
    bool empty() const noexcept { return len == 0; }
    std::span<const uint8_t> bytes() const noexcept { return {ptr, len}; }
    operator std::span<const uint8_t>() const noexcept { return bytes(); }  // NOLINT
  };

  // The free list's capacity follows the chunk table's, so that Free never allocates.
  RecordArena() { free_.reserve(kFreeChunksKept); }
  RecordArena(const RecordArena&) = delete;
  RecordArena& operator=(const RecordArena&) = delete;
  ~RecordArena() {
    for (Chunk& c : chunks_) base::GiveBlock(c.mem, c.cap);
  }

  // Store: copies `src` in; the bytes stay where they are until Free.
  Ref Store(std::span<const uint8_t> src) {
    if (src.empty()) return {};
    const size_t need = Round(src.size());
    uint32_t c;
    if (need > kChunkBytes / 4) {
      c = NewChunk(need);
    } else {
      if (current_ == kNoChunk || chunks_[current_].used + need > chunks_[current_].cap) {
        const uint32_t old = current_;
        // A small log stays small: 4 KiB first, doubling up to kChunkBytes.
        size_t cap = old == kNoChunk ? kFirstChunkBytes : size_t{chunks_[old].cap} * 2;
        cap = std::min(std::max(cap, need), kChunkBytes);
        current_ = NewChunk(cap);
        if (old != kNoChunk) MaybeRetire(old);  // no longer current: free if empty
      }
      c = current_;
    }
    Chunk& ch = chunks_[c];
    uint8_t* at = ch.mem + ch.used;
    std::memcpy(at, src.data(), src.size());
    ch.used += static_cast<uint32_t>(need);
    ch.live += static_cast<uint32_t>(need);
    ++records_;
    return Ref{at, static_cast<uint32_t>(src.size()), c};
  }

  // Free: `r`'s bytes are no longer needed; `r` becomes empty.
  void Free(Ref& r) noexcept {
    if (r.chunk == kNoChunk) {
      r = Ref{};
      return;
    }
    Chunk& ch = chunks_[r.chunk];
    const uint32_t n = static_cast<uint32_t>(Round(r.len));
    RP_ASSERT(ch.live >= n);
    ch.live -= n;
    RP_ASSERT(records_ > 0);
    --records_;
    if (r.chunk != current_) {
      MaybeRetire(r.chunk);
    } else if (ch.live == 0) {
      ch.used = 0;  // the current chunk emptied: start it over
    }
    r = Ref{};
  }

  // Bytes held (pool or heap): chunks in use and the empty ones kept.
  uint64_t bytes_held() const noexcept {
    uint64_t n = chunks_.capacity() * sizeof(Chunk) + free_.capacity() * sizeof(uint32_t);
    for (const Chunk& c : chunks_) n += c.cap;
    return n;
  }
  size_t records() const noexcept { return records_; }
  size_t chunks_in_use() const noexcept { return in_use_; }
  size_t chunks_free() const noexcept { return free_.size(); }
  // Chunks taken (pool or heap) since construction.
  uint64_t chunk_allocations() const noexcept { return chunk_allocations_; }

 private:
  struct Chunk {
    uint8_t* mem = nullptr;  // base::TakeBlock(cap)
    uint32_t cap = 0;
    uint32_t used = 0;  // bytes handed out since the chunk was (re)started
    uint32_t live = 0;  // of those, not yet freed
    bool in_use = false;
  };

  // Each fills a pool block (8 KiB of 24-byte chunks: 341, a 21 MiB log; 4 KiB of ids).
  static constexpr size_t kBusyChunks = 2 * base::BlockPool::kMinBlock / sizeof(Chunk);
  static constexpr size_t kBusyFree = base::BlockPool::kMinBlock / sizeof(uint32_t);
  static_assert(kBusyChunks * sizeof(Chunk) >= base::BlockPool::kMinBlock);

  static size_t Round(size_t n) noexcept { return (n + kAlign - 1) & ~(kAlign - 1); }

  // NewChunk: a chunk of at least `cap` bytes, from the free list when it is a standard one.
  uint32_t NewChunk(size_t cap) {
    if (cap == kChunkBytes && !free_.empty()) {
      const uint32_t c = free_.back();
      free_.pop_back();
      chunks_[c].used = 0;
      chunks_[c].live = 0;
      chunks_[c].in_use = true;
      ++in_use_;
      return c;
    }
    uint32_t c = kNoChunk;
    for (uint32_t i = 0; i < chunks_.size(); ++i) {
      if (chunks_[i].mem == nullptr) {
        c = i;
        break;
      }
    }
    if (c == kNoChunk) {
      if (cap == kChunkBytes && chunks_.capacity() < kBusyChunks) {
        // The first full-size chunk: a busy log. Its tables take one pool block each now
        // instead of doubling through the heap while the log grows (a quiet room's stay
        // small, on the heap, taken once).
        chunks_.reserve(kBusyChunks);
        free_.reserve(kBusyFree);
      }
      c = static_cast<uint32_t>(chunks_.size());
      chunks_.emplace_back();
      if (free_.capacity() < chunks_.size()) free_.reserve(chunks_.capacity());
    }
    Chunk& ch = chunks_[c];
    // Pool blocks are 4 KiB-aligned, heap ones 16 (kAlign).
    ch.mem = static_cast<uint8_t*>(base::TakeBlock(cap));
    ++chunk_allocations_;
    ch.cap = static_cast<uint32_t>(cap);
    ch.used = 0;
    ch.live = 0;
    ch.in_use = true;
    ++in_use_;
    return c;
  }

  size_t FreeChunksLimit() const noexcept {
    return std::max(kFreeChunksKept, in_use_ / kFreeChunksShare);
  }

  // MaybeRetire: chunk `c`, not current, goes to the free list (or the heap) once empty.
  void MaybeRetire(uint32_t c) noexcept {
    Chunk& ch = chunks_[c];
    if (ch.live != 0 || !ch.in_use) return;
    ch.in_use = false;
    ch.used = 0;
    RP_ASSERT(in_use_ > 0);
    --in_use_;
    // The log shrank: the empty chunks beyond its new share go back to the heap.
    while (free_.size() > FreeChunksLimit()) {
      Release(free_.back());
      free_.pop_back();
    }
    if (ch.cap == kChunkBytes && free_.size() < FreeChunksLimit()) {
      free_.push_back(c);  // capacity follows the chunk table's: no allocation here
      return;
    }
    Release(c);
  }

  void Release(uint32_t c) noexcept {
    base::GiveBlock(chunks_[c].mem, chunks_[c].cap);
    chunks_[c].mem = nullptr;
    chunks_[c].cap = 0;
  }

  base::PoolVector<Chunk> chunks_;
  base::PoolVector<uint32_t> free_;
  uint32_t current_ = kNoChunk;
  size_t records_ = 0;
  size_t in_use_ = 0;
  uint64_t chunk_allocations_ = 0;
};

}  // namespace ringpeer::room

#endif  // RINGPEER_NODE_ROOM_RECORD_ARENA_H_
