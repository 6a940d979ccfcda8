// Room: the deterministic order, the fold along it, and the checkpoint barrier.
#include <algorithm>
#include <cstring>
#include <queue>
#include <tuple>

#include "base/huge_pages.h"

#include "base/assert.h"
#include "flatbuffers/flatbuffers.h"
#include "node/room/room.h"

namespace ringpeer::room {
namespace {

Hash256 Chain(const Hash256& prev, const Hash256& id) noexcept {
  return wire::Hasher().Update(prev).Update(id).Final();
}

}  // namespace

uint32_t Room::AddEntry(const Hash256& id, Held&& held, bool refused) {
  const uint32_t slot = static_cast<uint32_t>(entries_.size());
  Entry& e = entries_.emplace_back();
  e.id = id;
  e.record = arena_.Store(held.record);  // the one copy of a placed record
  e.epoch = held.epoch;
  e.refused = refused;
  if (held.reissue_of) {
    root_of_.emplace(slot, *held.reissue_of);
    lines_[*held.reissue_of].push_back(slot);
  }
  for (const Hash256& p : held.parents) {
    const uint32_t ps = index_.at(p);
    e.parents.push_back(ps);
    entries_[ps].children.push_back(slot);
  }
  index_.emplace(id, slot);
  return slot;
}

Verdict Room::Insert(const Hash256& id, Held&& held) {
  const uint32_t slot = AddEntry(id, std::move(held), /*refused=*/false);
  entries_[slot].shown = true;
  // Kahn's algorithm taking the smallest available id would emit this update at the first
  // position, at or after all its parents (and the barrier), whose current occupant has a
  // larger id: before that, a smaller id was always available; after it, nothing changes.
  uint32_t pos = tail_start_;
  for (uint32_t ps : entries_[slot].parents) {
    if (!entries_[ps].base) pos = std::max(pos, entries_[ps].pos + 1);
  }
  while (pos < order_.size() && entries_[order_[pos]].id < id) ++pos;
  order_.insert(order_.begin() + pos, slot);
  chain_.insert(chain_.begin() + pos, Hash256{});
  for (uint32_t i = pos; i < order_.size(); ++i) entries_[order_[i]].pos = i;
  // Heads: the parents stop being heads, the new update is one.
  heads_.erase(std::remove_if(heads_.begin(), heads_.end(),
                              [&](uint32_t h) {
                                const auto& ps = entries_[slot].parents;
                                return std::find(ps.begin(), ps.end(), h) != ps.end();
                              }),
               heads_.end());
  heads_.push_back(slot);
  if (pos + 1 == order_.size()) return ApplyAt(pos);  // the common case: O(1)
  return Refold(pos);
}

Verdict Room::ApplyAt(uint32_t pos) {
  const Entry& e = entries_[order_[pos]];
  const Hash256& prev = pos == 0 ? base_hash_ : chain_[pos - 1];
  Verdict v = Verdict::kOk;
  if (!lines_.empty() && LineApplied(order_[pos], pos)) {
    v = Verdict::kReissueTwin;  // the same message, already applied: once only
  } else if (reader_) {
    const ContentKey* key = ContentKeyFor(e.epoch);
    const auto* env = flatbuffers::GetRoot<fb::Signed>(e.record.data());
    const auto* body = flatbuffers::GetRoot<fb::UpdateBody>(env->body()->data());
    Nonce nonce;
    std::memcpy(nonce.data(), body->nonce()->b()->Data(), nonce.size());
    const auto* cipher = body->ciphertext();
    if (key == nullptr ||
        !OpenContent(*key, nonce, id(), Bytes(cipher->data(), cipher->size()), &scratch_)) {
      v = Verdict::kUndecryptable;
    } else {
      v = reducer_->Apply(scratch_, genesis_.state_bytes_max);
    }
  }
  // A refused update (or a re-issue twin) stays in the log (every replica refuses it
  // alike) but changes neither the state nor its hash.
  chain_[pos] = v == Verdict::kOk ? Chain(prev, e.id) : prev;
  if (reader_ && (pos + 1) % kSnapshotEvery == 0 &&
      (snapshots_.empty() || snapshots_.back().pos < pos + 1)) {
    Snapshot snap;
    snap.pos = pos + 1;
    reducer_->Serialize(&snap.state);
    snapshots_.push_back(std::move(snap));
    if (snapshots_.size() > kSnapshotsMax) snapshots_.pop_front();
  }
  return v;
}

Verdict Room::Refold(uint32_t from_pos) {
  // Re-fold from the newest snapshot at or before `from_pos`, else from the base. The
  // cost is bounded by kSnapshotEvery plus the updates after `from_pos`, unless the
  // insertion lands before the oldest snapshot kept.
  while (!snapshots_.empty() && snapshots_.back().pos > from_pos) snapshots_.pop_back();
  uint32_t start = from_pos;
  if (reader_) {
    if (!snapshots_.empty()) {
      start = snapshots_.back().pos;
      RP_ASSERT(reducer_->Load(snapshots_.back().state));
    } else {
      start = 0;
      RP_ASSERT(reducer_->Load(base_state_));
    }
  }
  Verdict result = Verdict::kOk;
  for (uint32_t i = start; i < order_.size(); ++i) {
    Verdict v = ApplyAt(i);
    if (i == from_pos) result = v;
  }
  return result;
}

void Room::RebuildOrder() {
  // Kahn's algorithm over live updates, smallest (segment, id) first. Segments are the
  // checkpoint generations: every update a checkpoint covers comes before any it does not.
  std::vector<uint32_t> indegree(entries_.size(), 0);
  using Key = std::tuple<uint32_t, Hash256, uint32_t>;
  std::priority_queue<Key, std::vector<Key>, std::greater<Key>> ready;
  tail_start_ = 0;
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (e.dead || e.base || e.refused) continue;
    for (uint32_t p : e.parents) indegree[s] += !entries_[p].dead && !entries_[p].base;
    if (indegree[s] == 0) ready.emplace(e.segment, e.id, s);
    tail_start_ += e.segment != kTailSegment;
  }
  order_.clear();
  while (!ready.empty()) {
    const uint32_t s = std::get<2>(ready.top());
    ready.pop();
    entries_[s].pos = static_cast<uint32_t>(order_.size());
    order_.push_back(s);
    for (uint32_t c : entries_[s].children) {
      if (entries_[c].dead || entries_[c].refused) continue;
      if (--indegree[c] == 0) ready.emplace(entries_[c].segment, entries_[c].id, c);
    }
  }
  chain_.assign(order_.size(), Hash256{});
  snapshots_.clear();
  Refold(0);
  RecomputeHeads();
}

void Room::RecomputeHeads() {
  heads_.clear();
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (e.dead || e.refused) continue;
    // A base entry below the checkpoint's heads (kept by pruning for a later update's
    // links) is never a head: its covered children are gone, not absent.
    if (e.base && !cp_head_slots_.contains(s)) continue;
    bool has_child = false;
    for (uint32_t c : e.children) has_child |= !entries_[c].dead && !entries_[c].refused;
    if (!has_child) heads_.push_back(s);
  }
}

void Room::Kill(uint32_t slot, bool quarantine) {
  Entry& e = entries_[slot];
  RP_ASSERT(!e.dead);
  RP_ASSERT(!e.base);
  e.dead = true;
  e.pos = kNoPos;
  index_.erase(e.id);
  if (quarantine) {
    Held held;
    ParseHeld(e.record, &held);
    Hold(e.id, std::move(held));
  }
  arena_.Free(e.record);
}

void Room::PruneForRotation(const std::vector<Hash256>& rotation_heads, uint32_t epoch) {
  // The rotation point's ancestors: below the heads in the log, and below those held
  // pending (their parents in the log are ancestors too, and must not be set aside).
  std::vector<uint32_t> from;
  for (const Hash256& h : rotation_heads) {
    auto it = index_.find(h);
    if (it != index_.end()) {
      from.push_back(it->second);
    } else {
      Expect(h, &from);
    }
  }
  std::vector<uint8_t> mask = AncestorMask(from);
  // Old-key updates that the rotation point does not cover were written after it (or
  // concurrently with it): set them aside. A later arrival may still name them.
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (e.dead || e.base || e.segment != kTailSegment || e.epoch >= epoch || mask[s]) continue;
    Kill(s, /*quarantine=*/true);
  }
  // Pending updates under old keys are re-checked when released (PlaceOne).
}

// ---- checkpoints ----

Verdict Room::CheckCheckpoint(Bytes record, CheckpointInfo* cp) const {
  Bytes signed_bytes;
  Signature sig;
  Verdict v = DecodeCheckpoint(record, id(), cp, &signed_bytes, &sig);
  if (v != Verdict::kOk) return v;
  if (cp->epoch >= epochs_.size()) return Verdict::kUnknownEpoch;
  if (!wire::VerifySignature(epochs_[cp->epoch].write_key, signed_bytes, sig)) {
    return Verdict::kBadSignature;
  }
  return Verdict::kOk;
}

absl::StatusOr<Checkpoint> Room::MakeCheckpoint(RandomFn random) const {
  if (!can_write()) return absl::FailedPreconditionError("room: no write key");
  std::vector<Hash256> hs = heads();
  if (hs.size() > kCheckpointHeadsMax) {
    return absl::FailedPreconditionError("room: too many heads; write a merge first");
  }
  std::vector<uint8_t> state;
  reducer_->Serialize(&state);
  Nonce nonce;
  random(nonce);
  Checkpoint cp;
  const uint32_t epoch = static_cast<uint32_t>(epochs_.size() - 1);
  cp.record = room::MakeCheckpoint(id(), epoch, *epochs_.back().write,
                                   *epochs_.back().content_key, hs, state_hash(), state, nonce,
                                   &cp.blob, CoveredBy(heads_));
  return cp;
}

uint64_t Room::CoveredBy(std::span<const uint32_t> head_slots) const {
  // The updates of the room's history up to and including these heads: those in the log,
  // plus what the checkpoint this node started from covered when they reach back to it.
  std::vector<uint8_t> mask = AncestorMask(head_slots);
  uint64_t n = 0;
  bool reaches_base = false;
  for (uint32_t s = 0; s < mask.size(); ++s) {
    if (!mask[s]) continue;
    if (entries_[s].base) {
      reaches_base = true;
    } else {
      ++n;
    }
  }
  return n + (reaches_base ? base_covered_ : 0);
}

Verdict Room::AddCheckpoint(Bytes record, Bytes blob, SharedBytes holder,
                            const Hash256* blob_hash) {
  CheckpointInfo cp;
  Verdict v = CheckCheckpoint(record, &cp);
  if (v != Verdict::kOk) return Count(v);
  if (has_checkpoint() && cp.id == cp_.id) return Count(Verdict::kDuplicate);
  if (has_checkpoint() && !Better(cp, cp_)) return Count(Verdict::kStaleCheckpoint);
  if (!blob.empty() && !BlobMatches(blob, blob_hash, cp)) return Count(Verdict::kBadBlob);
  for (const Hash256& h : cp.heads) {
    if (!index_.contains(h)) {
      // Awaited until its heads come; one at a time, the best.
      CheckpointInfo awaited;
      if (!awaited_cp_record_.empty() &&
          CheckCheckpoint(awaited_cp_record_, &awaited) == Verdict::kOk &&
          !Better(cp, awaited) && !(cp.id == awaited.id)) {
        return Count(Verdict::kStaleCheckpoint);
      }
      awaited_cp_record_.assign(record.begin(), record.end());
      awaited_cp_blob_.assign(blob.begin(), blob.end());
      return Count(Verdict::kPending);
    }
  }
  return Count(InstallCheckpoint(cp, record, blob, std::move(holder)));
}

void Room::TryAwaitedCheckpoint() {
  // Runs after every update received: the awaited record's signature was checked when it
  // was set aside (AddCheckpoint), so it is only decoded here (a check costs ~50 us, as
  // much again as the update's own).
  if (awaited_cp_record_.empty()) return;
  CheckpointInfo cp;
  Bytes signed_bytes;
  Signature sig;
  if (DecodeCheckpoint(awaited_cp_record_, id(), &cp, &signed_bytes, &sig) != Verdict::kOk ||
      (has_checkpoint() && !Better(cp, cp_))) {
    awaited_cp_record_.clear();
    awaited_cp_blob_.clear();
    return;
  }
  for (const Hash256& h : cp.heads) {
    if (!index_.contains(h)) return;
  }
  std::vector<uint8_t> record = std::move(awaited_cp_record_);
  auto blob = std::make_shared<const std::vector<uint8_t>>(std::move(awaited_cp_blob_));
  awaited_cp_record_.clear();
  awaited_cp_blob_.clear();
  Count(InstallCheckpoint(cp, record, Bytes(blob->data(), blob->size()), blob));
}

Verdict Room::InstallCheckpoint(const CheckpointInfo& cp, Bytes record, Bytes blob,
                                SharedBytes holder) {
  std::vector<uint32_t> head_slots;
  for (const Hash256& h : cp.heads) head_slots.push_back(index_.at(h));
  std::vector<uint8_t> mask = AncestorMask(head_slots);
  // A node that started from a checkpoint holds its heads by id only: it cannot reorder
  // the history behind them. A better checkpoint that does not cover them (made on a
  // branch this node never held) means starting over from it (Swarm::StartOverFrom).
  // The base barrier is the line's first (LoadBase, Room::PruneCovered); the other base
  // entries lie behind it (pruning kept them for a later update's links) and are covered
  // whenever it is.
  if (!line_.empty()) {
    for (uint32_t s : line_.front()) {
      if (entries_[s].base && !entries_[s].dead && !mask[s]) return Verdict::kCheckpointFork;
    }
  }
  // The line: checkpoints already in effect that this one covers stay barriers (they are
  // nested, so they are a prefix); the rest of the line is dropped.
  size_t kept = 0;
  while (kept < line_.size() &&
         std::all_of(line_[kept].begin(), line_[kept].end(),
                     [&](uint32_t s) { return mask[s] != 0; })) {
    ++kept;
  }
  line_.resize(kept);
  line_.push_back(head_slots);
  cp_head_slots_ = absl::flat_hash_set<uint32_t>(head_slots.begin(), head_slots.end());
  cp_ = cp;
  cp_record_.assign(record.begin(), record.end());
  KeepBlob(blob, std::move(holder));
  ++cp_changes_;
  ApplyLine(kept);
  if (reader_) {
    const Hash256& at = tail_start_ == 0 ? base_hash_ : chain_[tail_start_ - 1];
    if (at != cp.state_hash) return Verdict::kCheckpointMismatch;
  }
  return Verdict::kOk;
}

void Room::ApplyLine(size_t kept) {
  // Segments: entries covered by the kept part of the line keep theirs (the line is
  // nested, so its first `kept` barriers still hold); the rest are the newest's or tail.
  cp_generation_ = static_cast<uint32_t>(line_.size());
  std::vector<uint8_t> mask = AncestorMask(line_.back());
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    Entry& e = entries_[s];
    if (e.dead || (e.segment != kTailSegment && e.segment <= kept)) continue;
    e.segment = mask[s] ? cp_generation_ : kTailSegment;
  }
  // Refusal under the newest alone (the nested ones are covered by it): slots are in
  // arrival order, and parents always arrive before their children.
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    Entry& e = entries_[s];
    if (e.dead || e.base) continue;
    e.refused = false;
    if (e.segment != kTailSegment) continue;
    if (e.parents.empty() && RootsRefused()) {  // see PlaceOne
      e.refused = true;
      continue;
    }
    for (uint32_t p : e.parents) {
      const Entry& parent = entries_[p];
      if (parent.dead) continue;
      if (parent.refused || (parent.segment != kTailSegment && !cp_head_slots_.contains(p))) {
        e.refused = true;
        break;
      }
    }
  }
  RebuildOrder();
  NoteRefusedOwn();
}

bool Room::LineApplied(uint32_t slot, uint32_t pos) const {
  auto root = root_of_.find(slot);
  const Hash256& original = root == root_of_.end() ? entries_[slot].id : root->second;
  auto line = lines_.find(original);
  if (line == lines_.end()) return false;
  // The fold (a position): applied before `pos` in the same segment of the order (between
  // the same two barriers of the checkpoint line). Only the segment counts, because a node
  // that started from a checkpoint cannot know what it covers: when a checkpoint covers an
  // original and its re-issue comes after it, every node applies both (a repeated
  // message, the same state everywhere) rather than only the nodes that hold the original
  // skipping the re-issue (the room simulator's seeds 1, 8, 13 and 16 diverged so).
  // The author's question (kNoPos): is any other update of the line in the order at all,
  // or in the checkpoint's base? Then there is nothing to re-issue.
  const uint32_t segment = entries_[slot].segment;
  auto applied = [&](uint32_t s) {
    const Entry& e = entries_[s];
    if (s == slot || e.dead || e.refused) return false;
    if (pos == kNoPos) return e.base || e.pos != kNoPos;
    return !e.base && e.segment == segment && e.pos != kNoPos && e.pos < pos;
  };
  if (root != root_of_.end()) {
    auto it = index_.find(original);
    if (it != index_.end() && applied(it->second)) return true;
  }
  for (uint32_t s : line->second) {
    if (applied(s)) return true;
  }
  return false;
}

bool Room::Echo(const Hash256& update) const {
  auto it = index_.find(update);
  if (it == index_.end() || lines_.empty()) return false;
  const uint32_t slot = it->second;
  auto root = root_of_.find(slot);
  const Hash256& original = root == root_of_.end() ? update : root->second;
  auto line = lines_.find(original);
  if (line == lines_.end()) return false;
  auto other_shown = [&](uint32_t s) { return s != slot && entries_[s].shown; };
  auto first = index_.find(original);
  if (first != index_.end() && other_shown(first->second)) return true;
  return std::any_of(line->second.begin(), line->second.end(), other_shown);
}

void Room::NoteRefusedOwn() {
  if (authored_.empty()) return;
  for (const Hash256& own : authored_fifo_) {
    auto it = index_.find(own);
    if (it != index_.end()) MaybeDue(it->second);
  }
}

void Room::MaybeDue(uint32_t slot) {
  const Entry& e = entries_[slot];
  if (e.dead || !e.refused || !authored_.contains(e.id) || !can_write()) return;
  if (LineApplied(slot, kNoPos)) return;
  auto root = root_of_.find(slot);
  const Hash256& original = root == root_of_.end() ? e.id : root->second;
  for (const Hash256& d : reissue_due_) {  // one per line
    auto ds = index_.find(d);
    if (ds == index_.end()) continue;
    auto dr = root_of_.find(ds->second);
    if ((dr == root_of_.end() ? d : dr->second) == original) return;
  }
  reissue_due_.push_back(e.id);
}

bool Room::checkpoint_mismatch() const noexcept {
  if (!reader_ || !has_checkpoint()) return false;
  const Hash256& at = tail_start_ == 0 ? base_hash_ : chain_[tail_start_ - 1];
  return at != cp_.state_hash;
}

bool Room::NeedsBlob(Bytes record, const Hash256& cached_state_hash) const {
  CheckpointInfo cp;
  if (CheckCheckpoint(record, &cp) != Verdict::kOk) return true;
  return cp.state_hash != cached_state_hash;
}

Verdict Room::LoadCheckpoint(Bytes record, Bytes blob, SharedBytes holder,
                             const Hash256* blob_hash) {
  return Count(LoadBase(record, blob, {}, std::move(holder), blob_hash));
}

Verdict Room::LoadCheckpointCached(Bytes record, Bytes cached_state) {
  return Count(LoadBase(record, {}, cached_state, nullptr, nullptr));
}

void Room::KeepBlob(Bytes blob, SharedBytes holder) {
  if (!HoldsBytes(holder, blob)) {
    // A copy of our own, made before the old one goes (`blob` may view it).
    auto copy = std::make_shared<std::vector<uint8_t>>();
    base::ReserveHuge(*copy, blob.size());
    copy->assign(blob.begin(), blob.end());
    blob = Bytes(copy->data(), copy->size());
    holder = std::move(copy);
  }
  cp_blob_holder_ = std::move(holder);
  cp_blob_ = blob;
}

bool Room::BlobMatches(Bytes blob, const Hash256* blob_hash, const CheckpointInfo& cp) {
  if (blob.size() != cp.blob_bytes) return false;
  return (blob_hash != nullptr ? *blob_hash : wire::Blake2b256(blob)) == cp.blob_hash;
}

Verdict Room::LoadBase(Bytes record, Bytes blob, Bytes plain_state, SharedBytes holder,
                       const Hash256* blob_hash) {
  // Nothing placed yet; dead entries (killed by a rotation) and pending updates may be
  // here: those waiting for the checkpoint's heads are placed below.
  RP_ASSERT(order_.empty() && !has_checkpoint());
  placed_.clear();
  CheckpointInfo cp;
  Verdict v = CheckCheckpoint(record, &cp);
  if (v != Verdict::kOk) return v;
  const bool from_cache = blob.empty() && !plain_state.empty();
  if (!from_cache && !BlobMatches(blob, blob_hash, cp)) return Verdict::kBadBlob;
  std::vector<uint8_t> plain(plain_state.begin(), plain_state.end());
  if (reader_ && !from_cache) {
    const ContentKey* key = ContentKeyFor(cp.epoch);
    if (key == nullptr) return Verdict::kNoKey;
    if (!OpenContent(*key, cp.nonce, id(), blob, &plain)) return Verdict::kBadBlob;
  }
  if (reader_ && !reducer_->Load(plain)) {
    RP_ASSERT(reducer_->Load(base_state_));
    return Verdict::kBadBlob;
  }
  base_state_ = std::move(plain);
  base_hash_ = cp.state_hash;
  cp_generation_ = 1;
  base_covered_ = cp.covered;
  std::vector<uint32_t> head_slots;
  for (const Hash256& h : cp.heads) {
    if (index_.contains(h)) continue;
    const uint32_t slot = static_cast<uint32_t>(entries_.size());
    Entry& e = entries_.emplace_back();
    e.id = h;
    e.base = true;
    e.segment = cp_generation_;
    index_.emplace(h, slot);
    cp_head_slots_.insert(slot);
    heads_.push_back(slot);
    head_slots.push_back(slot);
  }
  line_.assign(1, head_slots);
  ++cp_changes_;
  cp_ = cp;
  cp_record_.assign(record.begin(), record.end());
  KeepBlob(blob, std::move(holder));
  // Updates that arrived before the checkpoint and wait for its heads (a relay that lost
  // its log, then heard the room's new updates) are placed now (see placed()).
  Release(std::span<const Hash256>(cp.heads.data(), cp.heads.size()));
  return Verdict::kOk;
}

}  // namespace ringpeer::room
