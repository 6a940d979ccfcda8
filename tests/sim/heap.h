// Heap accounting for the simulators: every allocation is charged to an owner (a simulated
// node's index, or one of the shared owners below), so the simulator can check each node's
// memory after every step (issue 13, "each node's memory stays within its limits").
//
// The counting operator new/delete live in heap.cc (in rp_sim: only the simulator binaries
// and their tests link it): each allocation carries a 16-byte header with its size and
// owner, so a free is credited to the owner that allocated it, whoever frees it.
//
// Single-threaded use: the owner is one global, set around each call into a node.
#pragma once

#include <cstdint>

namespace ringpeer::sim::heap {

inline constexpr int kOwnersMax = 4096;  // node indices 0 .. kOwnersMax-1
inline constexpr int kShared = -1;       // the simulator's own bookkeeping, the network
inline constexpr int kDisk = -2;         // the in-memory stores (a node's disk, not its heap)

// Owner: who new allocations are charged to now.
int Owner() noexcept;
void SetOwner(int owner) noexcept;
// Bytes: live bytes charged to `owner` (requested sizes; headers not counted).
int64_t Bytes(int owner) noexcept;
// Total: live bytes of every owner.
int64_t Total() noexcept;

// Scope: charges allocations to `owner` until it ends.
class Scope {
 public:
  explicit Scope(int owner) noexcept : prev_(Owner()) { SetOwner(owner); }
  ~Scope() { SetOwner(prev_); }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  int prev_;
};

}  // namespace ringpeer::sim::heap
