// Room: pruning the log behind a checkpoint (issue 16, item 4), and the byte accounting
// that shows it keeps a room's memory bounded.
//
// Pruning behind a barrier of the line turns the room into what it would be had it
// started from that checkpoint (LoadBase): the covered updates leave, the barrier's heads
// become base entries, the order starts after them from the state and hash the fold had
// reached there. Everything that is not covered stays as it was, refused updates included,
// so the checkpoint in effect, the order, the heads and the state hash are unchanged.
#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "node/room/room.h"

namespace ringpeer::room {
bool Room::WasPruned(const Hash256& id) const noexcept {
  return !pruned_ids_.empty() && pruned_ids_.contains(IdPrefix64(id));
}

size_t Room::PruneCovered(std::span<const Hash256> barrier_heads,
                          std::vector<Hash256>* pruned) {
  RP_ASSERT(pruned != nullptr);
  if (!has_checkpoint() || barrier_heads.empty()) return 0;
  std::vector<uint32_t> want;
  for (const Hash256& h : barrier_heads) {
    auto it = index_.find(h);
    if (it == index_.end()) return 0;
    want.push_back(it->second);
  }
  std::sort(want.begin(), want.end());
  // The barrier: a checkpoint of the line. Any other set of heads would not cut the order
  // into a prefix (what it covers and what comes after), and the fold could not resume.
  size_t b = line_.size();
  for (size_t i = 0; i < line_.size(); ++i) {
    std::vector<uint32_t> slots = line_[i];
    std::sort(slots.begin(), slots.end());
    if (slots == want) b = i;
  }
  if (b == line_.size()) return 0;
  const uint32_t cut = static_cast<uint32_t>(b + 1);  // segments 1..cut are covered
  auto covered = [&](const Entry& e) {
    return !e.dead && e.segment != kTailSegment && e.segment <= cut;
  };
  base::PoolVector<uint8_t> keep_base(entries_.size(), 0);  // sized with the log: pooled
  size_t leaving = 0;
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (!covered(e)) {
      // A kept update's covered parents stay as base entries, so that it keeps its links
      // (a refused update stays refused; a later segment's update keeps its barrier).
      for (uint32_t p : e.parents) keep_base[p] |= covered(entries_[p]);
      continue;
    }
    leaving += !e.base;
  }
  for (uint32_t s : line_[b]) keep_base[s] = 1;
  // A covered update of a re-issue line stays as a base entry (applied), so that a twin
  // of it after the barrier is still known as one (Room::LineApplied). Lines are rare.
  if (!lines_.empty()) {
    for (uint32_t s = 0; s < entries_.size(); ++s) {
      if (covered(entries_[s]) &&
          (root_of_.contains(s) || lines_.contains(entries_[s].id))) {
        keep_base[s] = 1;
      }
    }
  }
  if (leaving == 0) return 0;
  const Hash256 hash_before = state_hash();

  // The fold where the barrier ends: the order is sorted by segment, so the covered
  // updates are its first `end` positions.
  uint32_t end = 0;
  while (end < order_.size() && entries_[order_[end]].segment <= cut) ++end;
  if (end > 0) base_hash_ = chain_[end - 1];
  if (reader_ && end > 0) {
    uint32_t start = 0;
    const std::vector<uint8_t>* from = &base_state_;
    for (const Snapshot& snap : snapshots_) {
      if (snap.pos <= end) {
        start = snap.pos;
        from = &snap.state;
      }
    }
    RP_ASSERT(reducer_->Load(*from));
    for (uint32_t i = start; i < end; ++i) ApplyAt(i);
    std::vector<uint8_t> state;
    reducer_->Serialize(&state);
    base_state_ = std::move(state);
  }
  base_covered_ += leaving;
  pruned_count_ += leaving;

  // Compact the slots: covered entries leave or become base entries.
  base::PoolVector<uint32_t> remap(entries_.size(), kNoPos);
  base::PoolVector<Entry> kept;
  kept.reserve(entries_.size() - leaving);
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    Entry& e = entries_[s];
    if (covered(e)) {
      // A base entry's record may be stored too (a restart read it back as a duplicate).
      if (!e.base || !keep_base[s]) pruned->push_back(e.id);
      if (!keep_base[s]) {
        if (pruned_fifo_.size() >= kPrunedIdsMax) {
          pruned_ids_.erase(pruned_fifo_.front());
          pruned_fifo_.pop_front();
        }
        if (pruned_ids_.insert(IdPrefix64(e.id)).second) pruned_fifo_.push_back(IdPrefix64(e.id));
        arena_.Free(e.record);
        continue;
      }
      e.base = true;
      e.segment = 1;
      e.refused = false;
      arena_.Free(e.record);
    } else if (e.segment != kTailSegment) {
      e.segment -= cut - 1;
    }
    remap[s] = static_cast<uint32_t>(kept.size());
    kept.push_back(std::move(e));
  }
  for (Entry& e : kept) {
    auto relink = [&](absl::InlinedVector<uint32_t, 2>& slots) {
      size_t n = 0;
      for (uint32_t s : slots) {
        if (remap[s] != kNoPos) slots[n++] = remap[s];
      }
      slots.resize(n);
    };
    relink(e.parents);
    relink(e.children);
  }
  entries_ = std::move(kept);
  index_ = decltype(index_)();
  index_.reserve(entries_.size());
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    if (!entries_[s].dead) index_.emplace(entries_[s].id, s);
  }
  if (!lines_.empty()) {
    absl::flat_hash_map<uint32_t, Hash256> roots;
    for (const auto& [slot, root] : root_of_) {
      if (remap[slot] != kNoPos) roots.emplace(remap[slot], root);
    }
    root_of_ = std::move(roots);
    for (auto it = lines_.begin(); it != lines_.end();) {
      auto& slots = it->second;
      size_t n = 0;
      for (uint32_t s : slots) {
        if (remap[s] != kNoPos) slots[n++] = remap[s];
      }
      slots.resize(n);
      if (slots.empty()) {
        lines_.erase(it++);
      } else {
        ++it;
      }
    }
  }
  line_.erase(line_.begin(), line_.begin() + static_cast<std::ptrdiff_t>(b));
  for (std::vector<uint32_t>& barrier : line_) {
    for (uint32_t& s : barrier) {
      RP_ASSERT(remap[s] != kNoPos);
      s = remap[s];
    }
  }
  absl::flat_hash_set<uint32_t> heads;
  for (uint32_t s : cp_head_slots_) {
    RP_ASSERT(remap[s] != kNoPos);
    heads.insert(remap[s]);
  }
  cp_head_slots_ = std::move(heads);
  cp_generation_ = static_cast<uint32_t>(line_.size());
  RebuildOrder();
  order_.shrink_to_fit();
  chain_.shrink_to_fit();
  RP_ASSERT(state_hash() == hash_before);
  return leaving;
}

uint64_t Room::HeldBytes() const noexcept {
  uint64_t n = sizeof(Room);
  n += entries_.capacity() * sizeof(Entry);
  n += arena_.bytes_held();  // the entries' records
  for (const Entry& e : entries_) {
    if (e.parents.size() > 2) n += e.parents.capacity() * sizeof(uint32_t);
    if (e.children.size() > 2) n += e.children.capacity() * sizeof(uint32_t);
  }
  // A flat hash map's slot is the value plus one control byte.
  n += index_.capacity() * (sizeof(Hash256) + sizeof(uint32_t) + 1);
  n += order_.capacity() * sizeof(uint32_t) + chain_.capacity() * sizeof(Hash256);
  n += heads_.capacity() * sizeof(uint32_t);
  for (const auto* held : {&pending_, &quarantine_}) {
    n += held->capacity() * (sizeof(Hash256) + sizeof(Held) + 1);
    for (const auto& [id, h] : *held) {
      n += h.owned.capacity();
      if (h.parents.size() > 2) n += h.parents.capacity() * sizeof(Hash256);
    }
  }
  for (const auto& [parent, children] : waiting_) {
    n += sizeof(Hash256) + sizeof(children) + children.capacity() * sizeof(Hash256);
  }
  for (const Snapshot& s : snapshots_) n += sizeof(Snapshot) + s.state.capacity();
  n += base_state_.capacity() + cp_record_.capacity() + cp_blob_.size();
  for (const auto& barrier : line_) n += sizeof(barrier) + barrier.capacity() * sizeof(uint32_t);
  n += cp_head_slots_.capacity() * (sizeof(uint32_t) + 1);
  n += pruned_ids_.capacity() * (sizeof(uint64_t) + 1) + pruned_fifo_.size() * sizeof(uint64_t);
  return n;
}

}  // namespace ringpeer::room
