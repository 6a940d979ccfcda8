// Swarm: checkpoints as fetchable objects. object = record ‖ blob in 1 KiB leaves under a
// fan-out-32 hash tree (RoomCheckpointRef in room_net.fbs). A fetch walks the tree top
// down, one level at a time: each piece is checked against the hash its parent gave, so
// pieces may come from every peer that advertises the checkpoint, a bad one is caught and
// its sender struck, and loss only means asking again. The assembled record and blob
// still pass the room's own signed checks before they are used.
#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "base/huge_pages.h"
#include "node/room/swarm.h"
#include "node/room/swarm_internal.h"

namespace ringpeer::room {
namespace {

// IsRoot: an update record with no parents.
bool IsRoot(Bytes record, const Hash256& room) {
  UpdateView view;
  if (DecodeUpdate(record, room, &view) != Verdict::kOk) return false;
  return view.body->parents() == nullptr || view.body->parents()->size() == 0;
}

// A peer that sent this many bad pieces is not asked again during this fetch.
constexpr uint32_t kStrikesMax = 3;
// Largest object a peer may advertise: the largest record plus the largest state cap we
// accept (64 MiB: far above the 5 MB default, and bounds what a liar makes us allocate).
constexpr uint64_t kObjectBytesMax = kCheckpointBytesMax + (uint64_t{64} << 20);

Bytes HashBytes(const std::vector<Hash256>& level, size_t first, size_t count) noexcept {
  return Bytes(reinterpret_cast<const uint8_t*>(level.data() + first), count * 32);
}

uint32_t Ceil(uint64_t a, uint64_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

}  // namespace

std::vector<uint32_t> PieceCounts(uint64_t object_bytes) {
  std::vector<uint32_t> counts{std::max<uint32_t>(1, Ceil(object_bytes, wire::kRoomPieceBytes))};
  while (counts.back() > 1) counts.push_back(Ceil(counts.back(), wire::kRoomPieceFanout));
  return counts;
}

// PieceBytes: the exact size of piece (level, index) of an object with `counts`.
static size_t PieceBytes(const std::vector<uint32_t>& counts, uint64_t object_bytes,
                         uint8_t level, uint32_t index) noexcept {
  if (level == 0) {
    return static_cast<size_t>(
        std::min<uint64_t>(wire::kRoomPieceBytes, object_bytes - uint64_t{index} *
                                                                  wire::kRoomPieceBytes));
  }
  const uint32_t below = counts[level - 1];
  return 32 * std::min<size_t>(wire::kRoomPieceFanout, below - index * wire::kRoomPieceFanout);
}

void BuildObject(Bytes record, Bytes blob, Swarm::Object* out) {
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  base::ReserveHuge(*bytes, record.size() + blob.size());
  bytes->assign(record.begin(), record.end());
  bytes->insert(bytes->end(), blob.begin(), blob.end());
  out->bytes = std::move(bytes);
  HashTree(out);
  out->info.id = wire::Blake2b256(record);
  out->info.root = out->hashes.back()[0];
  out->info.object_bytes = out->bytes->size();
  out->info.record_bytes = static_cast<uint32_t>(record.size());
  out->info.levels = static_cast<uint8_t>(out->hashes.size() - 1);
}

void HashTree(Swarm::Object* out) {
  const std::vector<uint32_t> counts = PieceCounts(out->bytes->size());
  out->hashes.assign(counts.size(), {});
  for (size_t k = 0; k < counts.size(); ++k) out->hashes[k].resize(counts[k]);
  HashLevels(out, 0);
}

void HashLevels(Swarm::Object* out, size_t first) {
  for (size_t k = first; k < out->hashes.size(); ++k) {
    for (size_t i = 0; i < out->hashes[k].size(); ++i) {
      out->hashes[k][i] =
          wire::Blake2b256(out->Piece(static_cast<uint8_t>(k), static_cast<uint32_t>(i)));
    }
  }
}

void Swarm::CheckObjectTree() noexcept {
  if (object_ == nullptr || object_->tree_checked) return;
  // The bytes passed the record's signed hash; a tree that disagrees with them came from
  // a peer that lied about it, and ours replaces it. The leaves a few thousand per tick
  // (a 64 MiB object at once would stall the shard ~100 ms), then the inner levels, each
  // from the one below (Object::Piece).
  Object& o = *object_;
  std::vector<Hash256>& leaves = o.hashes[0];
  const size_t stop = std::min<size_t>(
      leaves.size(), o.leaves_hashed + std::max<uint32_t>(1, config_.tree_leaves_per_tick));
  for (size_t i = o.leaves_hashed; i < stop; ++i) {
    leaves[i] = wire::Blake2b256(o.Piece(0, static_cast<uint32_t>(i)));
  }
  o.leaves_hashed = static_cast<uint32_t>(stop);
  if (stop < leaves.size()) return;
  HashLevels(&o, 1);
  o.info.root = o.hashes.back()[0];
  o.tree_checked = true;
}

Bytes Swarm::Object::Piece(uint8_t level, uint32_t index) const noexcept {
  if (level >= hashes.size() || index >= hashes[level].size()) return {};
  if (level == 0) {
    const size_t first = size_t{index} * wire::kRoomPieceBytes;
    return Bytes(bytes->data() + first, std::min(wire::kRoomPieceBytes, bytes->size() - first));
  }
  const std::vector<Hash256>& below = hashes[level - 1];
  const size_t first = size_t{index} * wire::kRoomPieceFanout;
  return HashBytes(below, first, std::min(wire::kRoomPieceFanout, below.size() - first));
}

const wire::RoomCheckpointInfo& Swarm::checkpoint_info() const noexcept {
  static const wire::RoomCheckpointInfo kNone{};
  return object_ != nullptr && object_->tree_checked ? object_->info : kNone;
}

void Swarm::AdoptObject(Bytes record, Bytes blob) {
  since_checkpoint_ = 0;
  auto object = std::make_unique<Object>();
  BuildObject(record, blob, object.get());
  object->info.covered = CoveredOf(record);
  object_ = std::move(object);
}

uint64_t Swarm::CoveredOf(Bytes record) const {
  CheckpointInfo info;
  Bytes signed_bytes;
  Signature sig;
  if (DecodeCheckpoint(record, id(), &info, &signed_bytes, &sig) != Verdict::kOk) return 0;
  return info.covered;
}

absl::Status Swarm::MakeCheckpoint() {
  auto cp = room_->MakeCheckpoint([this](std::span<uint8_t> b) { rng_->Fill(b); });
  if (!cp.ok()) return cp.status();
  const Verdict v = room_->AddCheckpoint(cp->record, cp->blob);
  if (v != Verdict::kOk) return absl::InternalError(VerdictName(v));
  if (storage_ != nullptr && !storage_->PutCheckpoint(id(), cp->record, cp->blob).ok()) {
    ++counters_.storage_errors;
  }
  AdoptObject(cp->record, cp->blob);
  return absl::OkStatus();
}

void Swarm::Restore(const LoadedRoom& r) {
  RP_ASSERT(room_->log_size() == 0);
  const bool have_cp = !r.checkpoint_record.empty();
  bool loaded_cp = false;
  absl::flat_hash_set<Hash256, IdHash> covered;  // stored updates the checkpoint covers
  if (have_cp) {
    // Started from the checkpoint (a joiner) unless every head of it is in the log.
    CheckpointInfo info;
    Bytes signed_bytes;
    Signature sig;
    if (DecodeCheckpoint(r.checkpoint_record, id(), &info, &signed_bytes, &sig) == Verdict::kOk) {
      absl::flat_hash_set<Hash256, IdHash> ids;
      std::vector<Hash256> parents;
      for (const auto& u : r.updates) {
        UpdateView view;
        if (DecodeUpdate(u, id(), &view) != Verdict::kOk) continue;
        ids.insert(view.id);
        if (const auto* ps = view.body->parents()) {
          for (const fb::Key256* p : *ps) parents.push_back(FromKey(*p));
        }
      }
      bool all = true;
      for (const Hash256& h : info.heads) all &= ids.contains(h);
      // The stored log must also reach back to the room's start: a relay that started
      // from an older checkpoint holds the log after that one only, and the newer
      // checkpoint that replaced it in storage names heads it does hold. Replayed from
      // nothing, that log would wait for parents forever (the room simulator found a
      // restarted relay holding 460 updates pending and none placed).
      for (const Hash256& p : parents) all &= ids.contains(p);
      if (!all) loaded_cp = room_->LoadCheckpoint(r.checkpoint_record, r.checkpoint_blob) ==
                            Verdict::kOk;
      // A pruning node (swarm_prune.cc) may have pruned behind an older checkpoint than
      // the one stored: what lies between them is covered by the one loaded and would
      // wait for parents that are gone, filling the pending set. Skipped (and pruned).
      if (loaded_cp && config_.retention_us > 0) covered = StoredAncestors(r, info.heads);
    }
  }
  for (const auto& u : r.updates) {
    UpdateView view;
    if (!covered.empty() && DecodeUpdate(u, id(), &view) == Verdict::kOk &&
        covered.contains(view.id)) {
      continue;
    }
    room_->ReceiveStored(u);
  }
  if (!covered.empty() && storage_ != nullptr) {
    const std::vector<Hash256> ids(covered.begin(), covered.end());
    if (!storage_->Prune(id(), ids).ok()) ++counters_.storage_errors;
  }
  if (have_cp && !loaded_cp) room_->AddCheckpoint(r.checkpoint_record, r.checkpoint_blob);
  if (have_cp && room_->has_checkpoint()) AdoptObject(r.checkpoint_record, r.checkpoint_blob);
  for (const auto& u : r.updates) {
    UpdateView view;
    if (DecodeUpdate(u, id(), &view) == Verdict::kOk) seen_.Insert(IdPrefix64(view.id));
  }
  digest_dirty_ = true;
  restored_updates_ = room_->log_size();
  if (!room_->has_checkpoint()) since_checkpoint_ = room_->log_size();
}

absl::flat_hash_set<Hash256, IdHash> Swarm::StoredAncestors(const LoadedRoom& r,
                                                           const std::vector<Hash256>& heads) {
  absl::flat_hash_map<Hash256, std::vector<Hash256>, IdHash> parents;
  for (const auto& u : r.updates) {
    UpdateView view;
    if (DecodeUpdate(u, id(), &view) != Verdict::kOk) continue;
    std::vector<Hash256>& ps = parents[view.id];
    if (const auto* list = view.body->parents()) {
      for (const fb::Key256* p : *list) ps.push_back(FromKey(*p));
    }
  }
  absl::flat_hash_set<Hash256, IdHash> out;
  std::vector<Hash256> stack(heads.begin(), heads.end());
  while (!stack.empty()) {
    const Hash256 h = stack.back();
    stack.pop_back();
    auto it = parents.find(h);
    if (it == parents.end() || !out.insert(h).second) continue;
    stack.insert(stack.end(), it->second.begin(), it->second.end());
  }
  return out;
}

void Swarm::SetCachedState(const Hash256& state_hash, std::vector<uint8_t> state) {
  cached_hash_ = state_hash;
  cached_state_ = std::move(state);
}

// MaybeFetch: starts fetching an advertised checkpoint when this node needs it: to join
// (an empty room), or as a relay that serves joiners.
// ResetLog: the room over again, empty, from its genesis and key epochs (a member told to
// take a checkpoint it cannot reach from its log). Its stored log is forgotten: the
// checkpoint covers it, and its own updates that no relay acknowledged yet are still
// retransmitted from unacked_.
bool Swarm::ResetLog() {
  // An app room's reducer comes from the application again (Room::OpenApp).
  SwarmListener* listener = listener_;
  auto fresh = Room::OpenApp(
      genesis_record_, room_->identity(),
      [listener](const Genesis& g) -> std::unique_ptr<Reducer> {
        return listener != nullptr ? listener->MakeAppReducer(g) : nullptr;
      },
      /*carrier=*/config_.relay);
  if (!fresh.ok()) return false;
  for (const auto& e : epochs_) {
    if ((*fresh)->AddKeyEpoch(e) != Verdict::kOk) return false;
  }
  const Hash256 before = room_->state_hash();
  if (!config_.relay) {
    std::vector<std::vector<uint8_t>> own = room_->OwnRecords();
    (*fresh)->AdoptOwn(own);
    own_kept_ = std::move(own);
  }
  room_ = std::move(*fresh);
  object_.reset();
  adopted_changes_ = 0;
  awaited_record_.clear();
  awaited_blob_.clear();
  since_checkpoint_ = 0;
  digest_dirty_ = true;
  ++counters_.log_resets;
  // A relay keeps its store: it holds every update it acked, and must go on holding them.
  if (storage_ != nullptr && !config_.relay) {
    absl::Status s = storage_->Forget(id());
    if (s.ok()) s = storage_->PutGenesis(id(), genesis_record_);
    for (size_t i = 0; s.ok() && i < epochs_.size(); ++i) {
      s = storage_->PutKeyEpoch(id(), static_cast<uint32_t>(i), epochs_[i]);
    }
    if (!s.ok()) ++counters_.storage_errors;
  }
  NoteStateChange(before);
  return true;
}

void Swarm::MaybeFetch(int64_t now_us, const wire::RoomCheckpointInfo& cp, base::Outbox& out) {
  if (fetch_ != nullptr || !cp.valid()) return;
  if (object_ != nullptr && object_->info.id == cp.id) return;
  if (std::find(tried_.begin(), tried_.end(), cp.id) != tried_.end()) return;
  // Everyone takes every new checkpoint: relays to serve joiners, members because the
  // checkpoint in effect is the order's barrier, so two members holding the same updates
  // reach the same state hash only once they hold the same checkpoint (the room simulator
  // found members that never took their writer's checkpoint diverging for good).
  if (!awaited_record_.empty() && wire::Blake2b256(awaited_record_) == cp.id) return;
  // Ranked below ours (fewer updates covered): never put in effect, so not fetched. A tie
  // is settled by the record's id, once its leaves are here (OnPiece).
  if (object_ != nullptr && cp.covered != 0 && cp.covered < object_->info.covered) return;
  const std::vector<uint32_t> counts = PieceCounts(cp.object_bytes);
  if (cp.object_bytes > kObjectBytesMax || cp.record_bytes > kCheckpointBytesMax ||
      cp.record_bytes == 0 || counts.size() - 1 != cp.levels) {
    return;  // a malformed advertisement: ignored
  }
  auto f = std::make_unique<Fetch>();
  f->info = cp;
  f->counts = counts;
  f->expected.resize(counts.size());
  for (size_t k = 0; k < counts.size(); ++k) f->expected[k].resize(counts[k]);
  f->expected.back()[0] = cp.root;
  base::ReserveHuge(f->bytes, cp.object_bytes);  // a first join's page faults (issue 15)
  f->bytes.resize(cp.object_bytes);
  fetch_ = std::move(f);
  for (Peer& p : peers_) p.pieces_inflight = 0;
  StartLevel(cp.levels);
  RequestPieces(now_us, out);
}

void Swarm::StartLevel(uint8_t level) {
  Fetch& f = *fetch_;
  f.level = level;
  f.state.assign(f.counts[level], PieceState::kMissing);
  f.sent_us.assign(f.counts[level], 0);
  f.sent_to.assign(f.counts[level], 0);
  f.cursor = 0;
  f.have = 0;
  for (Peer& p : peers_) p.pieces_inflight = 0;  // answers for the old level are ignored
  if (level == 0) {
    f.came_from.assign(f.counts[0], Fetch::Sender{});
    f.blob_hasher = wire::Hasher();
    f.hashed = f.info.record_bytes;
  }
}

void Swarm::RequestPieces(int64_t now_us, base::Outbox& out) noexcept {
  Fetch& f = *fetch_;
  // Round robin over the peers that advertise this checkpoint, one request each per pass,
  // until every window is full or no piece is left to ask for. Bounded: each pass sends
  // at least one request or stops.
  for (bool sent = true; sent;) {
    sent = false;
    for (Peer& p : peers_) {
      if (!p.used || !(p.checkpoint.id == f.info.id) || p.strikes >= kStrikesMax) continue;
      if (p.pieces_inflight >= config_.pieces_inflight_per_peer) continue;
      // A peer that reads ranges is asked again once a whole range fits its window (else
      // each piece that came would be answered by a request for one more).
      const uint32_t range = std::min(p.range, config_.pieces_inflight_per_peer);
      if (range > 1 && p.pieces_inflight > 0 &&
          config_.pieces_inflight_per_peer - p.pieces_inflight < range) {
        continue;
      }
      // The lowest missing piece (a lost or bad one moved the cursor back to it) and,
      // from a peer that reads ranges (issue 15), the missing ones after it, as many as
      // its window and kRoomPieceRangeMax allow.
      while (f.cursor < f.state.size() && f.state[f.cursor] != PieceState::kMissing) {
        ++f.cursor;
      }
      if (f.cursor == f.state.size()) return;
      const uint32_t index = f.cursor++;
      uint32_t count = 1;
      if (range > 1) {
        const uint32_t most = std::min<uint32_t>(range, config_.pieces_inflight_per_peer -
                                                            p.pieces_inflight);
        while (count < most && f.cursor < f.state.size() &&
               f.state[f.cursor] == PieceState::kMissing) {
          ++count;
          ++f.cursor;
        }
      }
      std::span<uint8_t> buf = Buffer(out);
      if (buf.empty()) {  // asked for nothing: ask again next time
        f.cursor = index;
        return;
      }
      Send(p.addr, encoder_->RoomCheckpointGet(buf, id(), f.info.id, f.level, index, count),
           out);
      for (uint32_t i = index; i < index + count; ++i) {
        f.state[i] = PieceState::kRequested;
        f.sent_us[i] = now_us;
        f.sent_to[i] = SlotOf(&p);
      }
      p.pieces_inflight += count;
      sent = true;
    }
  }
}

wire::Verdict Swarm::OnPieceGet(int64_t now_us, const base::Endpoint& from,
                                const wire::Message& msg, base::Outbox& out) noexcept {
  Peer* p = FindPeer(from);
  if (p == nullptr) return wire::Verdict::kUnverifiedSender;
  const wire::fb::RoomCheckpointGet* m = msg.room_checkpoint_get();
  const Hash256 cp = wire::FromWireId(*m->checkpoint());
  const bool held = object_ != nullptr && object_->tree_checked && object_->info.id == cp;
  // A range (issue 15) costs a token per piece, and stops at the level's end; a piece we
  // do not hold is answered once, empty (the asker drops us as a source).
  uint32_t count = 1;
  if (held) {
    const size_t level_pieces =
        m->level() < object_->hashes.size() ? object_->hashes[m->level()].size() : 0;
    if (m->index() < level_pieces) {
      count = static_cast<uint32_t>(
          std::min<size_t>(std::max<uint32_t>(m->count(), 1), level_pieces - m->index()));
    }
  }
  if (!p->serve.TryTake(now_us, count)) {
    if (count == 1 || !p->serve.TryTake(now_us)) return wire::Verdict::kRateLimited;
    count = 1;
  }
  auto encode = [&](std::span<uint8_t> buf, uint32_t i) {
    const Bytes piece = held ? object_->Piece(m->level(), m->index() + i) : Bytes();
    return encoder_->RoomCheckpointChunk(buf, id(), cp, m->level(), m->index() + i, piece);
  };
  // Several pieces leave as one burst where the outbox has them: the chunks are one size
  // but the last level's last, so little is padded.
  static_assert(wire::kRoomPieceRangeMax * wire::kDatagramBytesMax <= base::kBurstBytesMax &&
                wire::kRoomPieceRangeMax <= base::kBurstDatagramsMax);
  constexpr size_t kStride = wire::kDatagramBytesMax;
  std::span<uint8_t> burst = count > 1 ? out.BurstBuffer() : std::span<uint8_t>();
  if (burst.size() >= count * kStride) {
    size_t sizes[wire::kRoomPieceRangeMax];
    for (uint32_t i = 0; i < count; ++i) sizes[i] = encode(burst.subspan(i * kStride, kStride), i);
    size_t segment = 0;
    const size_t size = wire::PackBurst(burst.data(), sizes, count, &segment);
    counters_.pieces_served +=
        out.CommitBurst(size, segment, std::span<const base::Endpoint>(&from, 1));
    return wire::Verdict::kOk;
  }
  for (uint32_t i = 0; i < count; ++i) {
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return wire::Verdict::kSendQueueFull;
    Send(from, encode(buf, i), out);
    ++counters_.pieces_served;
  }
  return wire::Verdict::kOk;
}

wire::Verdict Swarm::OnPiece(int64_t now_us, const base::Endpoint& from,
                             const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::RoomCheckpointChunk* m = msg.room_checkpoint_chunk();
  Peer* p = FindPeer(from);
  // A peer struck out is not asked, and not heard either: its pieces would be taken before
  // the good ones (a blob leaf is only checked with the whole blob).
  if (fetch_ == nullptr || p == nullptr || p->strikes >= kStrikesMax) {
    return wire::Verdict::kUnexpectedReply;
  }
  Fetch& f = *fetch_;
  const uint32_t index = m->index();
  if (!(wire::FromWireId(*m->checkpoint()) == f.info.id) || m->level() != f.level ||
      index >= f.state.size() || f.state[index] == PieceState::kHave) {
    return wire::Verdict::kUnexpectedReply;  // late, duplicate or for an old level
  }
  // A requested piece holds one unit of the window of the peer it was last asked of,
  // whoever answers it: a late answer from a peer that timed out must not leave the unit
  // with the one asked again (its own answer then finds the piece held and returns).
  if (f.state[index] == PieceState::kRequested) {
    Peer& asked = peers_[f.sent_to[index]];
    if (asked.pieces_inflight > 0) --asked.pieces_inflight;
  }
  Bytes piece(m->bytes()->data(), m->bytes()->size());
  const bool fits = piece.size() == PieceBytes(f.counts, f.info.object_bytes, f.level, index);
  // A blob leaf is checked with the whole blob, once it is here (Fetch, FinishFetch).
  const bool check_now = f.level != 0 || f.check_leaves ||
                         index < Ceil(f.info.record_bytes, wire::kRoomPieceBytes);
  if (piece.empty() || !fits ||
      (check_now && wire::Blake2b256(piece) != f.expected[f.level][index])) {
    if (piece.empty()) {
      p->checkpoint = {};  // it does not hold this checkpoint (any more)
    } else {
      ++counters_.pieces_bad;
      ++p->strikes;
    }
    f.state[index] = PieceState::kMissing;
    f.cursor = std::min(f.cursor, index);
    RequestPieces(now_us, out);
    return piece.empty() ? wire::Verdict::kOk : wire::Verdict::kBadField;
  }
  ++counters_.pieces_received;
  if (f.level == 0) {
    std::memcpy(f.bytes.data() + size_t{index} * wire::kRoomPieceBytes, piece.data(),
                piece.size());
    f.came_from[index] = {SlotOf(p), p->generation};
  } else {
    std::memcpy(f.expected[f.level - 1].data() + size_t{index} * wire::kRoomPieceFanout,
                piece.data(), piece.size());
  }
  f.state[index] = PieceState::kHave;
  ++f.have;
  if (f.level == 0) HashBlobPrefix();
  if (f.level == 0 && !f.rank_checked && !Outranks()) return wire::Verdict::kOk;
  if (f.level == 0 && !f.record_checked && TryCachedLoad()) return wire::Verdict::kOk;
  if (f.have < f.state.size()) {
    RequestPieces(now_us, out);
  } else if (f.level > 0) {
    StartLevel(f.level - 1);
    RequestPieces(now_us, out);
  } else {
    FinishFetch(now_us, out);
  }
  return wire::Verdict::kOk;
}

// Outranks: once the leaves holding the record are here, false (and the fetch given up)
// when the room would not put it in effect: its rank is below the checkpoint we hold, so
// its blob is not worth fetching. True until then.
bool Swarm::Outranks() {
  Fetch& f = *fetch_;
  const uint32_t record_leaves = Ceil(f.info.record_bytes, wire::kRoomPieceBytes);
  for (uint32_t i = 0; i < record_leaves; ++i) {
    if (f.state[i] != PieceState::kHave) return true;
  }
  f.rank_checked = true;
  const Bytes record(f.bytes.data(), f.info.record_bytes);
  if (room_->Improves(record)) return true;
  if (tried_.size() == kTriedCheckpointsMax) tried_.erase(tried_.begin());
  tried_.push_back(f.info.id);
  const bool empty = room_->log_size() == 0 && !room_->has_checkpoint();
  AbandonFetch();
  RP_ASSERT(!empty);  // an empty room has no checkpoint: every one improves it
  return false;
}

// TryCachedLoad: once the leaves holding the record are here, a cached state with the
// checkpoint's state hash replaces the blob. True when the fetch ended that way.
bool Swarm::TryCachedLoad() {
  Fetch& f = *fetch_;
  if (cached_state_.empty()) {
    f.record_checked = true;
    return false;
  }
  const uint32_t record_leaves = Ceil(f.info.record_bytes, wire::kRoomPieceBytes);
  for (uint32_t i = 0; i < record_leaves; ++i) {
    if (f.state[i] != PieceState::kHave) return false;
  }
  f.record_checked = true;
  const std::vector<uint8_t> record(f.bytes.begin(), f.bytes.begin() + f.info.record_bytes);
  if (room_->log_size() != 0 || room_->has_checkpoint() ||
      room_->NeedsBlob(record, cached_hash_)) {
    return false;
  }
  if (room_->LoadCheckpointCached(record, cached_state_) != Verdict::kOk) return false;
  ReplayOwn();
  ++counters_.checkpoints_loaded;
  const Hash256 cp = f.info.id;
  AbandonFetch();  // the blob is not needed; this node cannot serve it, others can
  digest_dirty_ = true;
  Emit(SwarmEvent::kCheckpointLoaded, cp, {});
  return true;
}

void Swarm::HashBlobPrefix() noexcept {
  Fetch& f = *fetch_;
  const uint64_t end = f.bytes.size();
  while (f.hashed < end) {
    const uint64_t leaf = f.hashed / wire::kRoomPieceBytes;
    if (f.state[leaf] != PieceState::kHave) return;
    const uint64_t stop = std::min<uint64_t>((leaf + 1) * wire::kRoomPieceBytes, end);
    f.blob_hasher.Update(Bytes(f.bytes.data() + f.hashed, stop - f.hashed));
    f.hashed = stop;
  }
}

bool Swarm::StrikeBadLeaves(int64_t now_us, base::Outbox& out) {
  Fetch& f = *fetch_;
  bool any = false;
  for (uint32_t i = Ceil(f.info.record_bytes, wire::kRoomPieceBytes); i < f.counts[0]; ++i) {
    const size_t first = size_t{i} * wire::kRoomPieceBytes;
    const Bytes leaf(f.bytes.data() + first,
                     std::min(wire::kRoomPieceBytes, f.bytes.size() - first));
    if (wire::Blake2b256(leaf) == f.expected[0][i]) continue;
    any = true;
    ++counters_.pieces_bad;
    const Fetch::Sender& from = f.came_from[i];  // still the peer that sent it?
    if (from.slot < peers_.size() && peers_[from.slot].used &&
        peers_[from.slot].generation == from.generation) {
      ++peers_[from.slot].strikes;
    }
    f.state[i] = PieceState::kMissing;
    --f.have;
    f.cursor = std::min(f.cursor, i);
  }
  if (!any) return false;  // the leaves are the tree's: the tree and the record disagree
  f.check_leaves = true;
  f.blob_hasher = wire::Hasher();
  f.hashed = f.info.record_bytes;
  HashBlobPrefix();
  RequestPieces(now_us, out);
  return true;
}

void Swarm::FinishFetch(int64_t now_us, base::Outbox& out) {
  Fetch& f = *fetch_;
  // Every leaf is here, so the blob's hash is whole (HashBlobPrefix). A blob that is not
  // the one the record signs had bad leaves (asked again) or came under a tree that does
  // not lead to it (given up, and not fetched again). The load below is told the hash and
  // does not hash the blob again.
  RP_ASSERT(f.hashed == f.bytes.size());
  const Hash256 blob_hash = f.blob_hasher.Final();
  {
    CheckpointInfo claimed;
    Bytes signed_bytes;
    Signature sig;
    const Bytes rec(f.bytes.data(), f.info.record_bytes);
    if (DecodeCheckpoint(rec, id(), &claimed, &signed_bytes, &sig) == Verdict::kOk &&
        !(claimed.blob_hash == blob_hash)) {
      if (StrikeBadLeaves(now_us, out)) return;
      const bool empty = room_->log_size() == 0 && !room_->has_checkpoint();
      if (tried_.size() == kTriedCheckpointsMax) tried_.erase(tried_.begin());
      tried_.push_back(f.info.id);
      AbandonFetch();
      if (empty) RequestSync(now_us, out);
      return;
    }
  }
  // Shared from here on: the object below serves it, and the room keeps its blob as a
  // view into it rather than a copy (5 MB, and as many fresh pages, for a 5 MB state).
  const SharedBytes held = std::make_shared<const std::vector<uint8_t>>(std::move(f.bytes));
  const std::vector<uint8_t> record(held->begin(), held->begin() + f.info.record_bytes);
  Bytes blob(held->data() + f.info.record_bytes, held->size() - f.info.record_bytes);
  const bool empty = room_->log_size() == 0 && !room_->has_checkpoint();
  const bool start_over = start_over_ && start_over_for_ == f.info.id && !empty;
  start_over_ = false;
  const Hash256 before = room_->state_hash();
  // Started from without its heads in the log (a joiner, a member told to take it, a
  // fork or a mismatch): only a trusted one (TrustedCheckpoint).
  const bool trusted = TrustedCheckpoint(record);
  if ((empty || start_over) && !trusted) {
    // Kept, waiting as one whose heads have not come: taken once it is trusted (more of
    // our peers take it) and has waited (StopAwaiting), or when its heads come.
    if (awaited_record_.empty()) awaited_since_us_ = now_us;
    awaited_record_ = record;
    awaited_blob_.assign(blob.begin(), blob.end());
    AbandonFetch();
    if (empty) RequestSync(now_us, out);
    return;
  }
  Verdict v;
  if (start_over) {
    v = StartOverFrom(record, blob, Verdict::kPending);
  } else {
    v = empty ? room_->LoadCheckpoint(record, blob, held, &blob_hash)
              : room_->AddCheckpoint(record, blob, held, &blob_hash);
  }
  if (trusted &&
      ((v == Verdict::kCheckpointMismatch && !config_.relay) || v == Verdict::kCheckpointFork)) {
    v = StartOverFrom(record, blob, v);
  }
  const Hash256 cp = f.info.id;
  if (v == Verdict::kOk) {
    ReplayOwn();
    if (empty) {
      // Held updates the checkpoint's heads released (stored when they arrived). Only
      // LoadCheckpoint fills placed() here; after AddCheckpoint it still lists what the
      // last update placed, already told (it_rooms_stream printed those twice).
      base::Endpoint source;  // a peer that offered the checkpoint: the updates' sender
      for (const Peer& p : peers_) {
        if (p.used && p.checkpoint.id == f.info.id) source = p.addr;
      }
      for (const Hash256& placed : room_->placed()) {
        Emit(SwarmEvent::kUpdateApplied, placed, source);
      }
    }
    auto object = std::make_unique<Object>();
    object->info = f.info;
    object->bytes = held;
    object->hashes = std::move(f.expected);  // the blob's leaves are not: CheckObjectTree
    object->tree_checked = false;
    object_ = std::move(object);
    object_->info.covered = CoveredOf(record);
    since_checkpoint_ = 0;
    // The store's writer reads the blob from `held` too (no staging copy of megabytes).
    if (storage_ != nullptr && !storage_->PutCheckpointShared(id(), record, blob, held).ok()) {
      ++counters_.storage_errors;
    }
    ++counters_.checkpoints_loaded;
    digest_dirty_ = true;
    AbandonFetch();
    Emit(SwarmEvent::kCheckpointLoaded, cp, {});
    NoteStateChange(before);
    RequestSync(now_us, out);  // the log after the checkpoint
    return;
  }
  if (v == Verdict::kPending) {  // its heads have not reached us yet
    // A better one replacing an awaited one keeps the wait's start: on a branch that
    // checkpoints more often than StopAwaiting's bound the node would wait for good.
    if (awaited_record_.empty()) awaited_since_us_ = now_us;
    awaited_record_ = record;
    awaited_blob_.assign(blob.begin(), blob.end());
  } else if (v != Verdict::kDuplicate) {
    if (tried_.size() == kTriedCheckpointsMax) tried_.erase(tried_.begin());
    tried_.push_back(cp);  // a bad root or a stale checkpoint: not fetched again
  }
  AbandonFetch();
  if (empty) RequestSync(now_us, out);
}

Verdict Swarm::StartOverFrom(Bytes record, Bytes blob, Verdict why) {
  // kCheckpointMismatch: our replay of the history it covers reached another state than
  // its writer's: we missed an earlier checkpoint that ordered part of that history (only
  // the newest is advertised), so our order differs. kCheckpointFork: we started from a
  // checkpoint it does not cover, and cannot reorder the history behind ours. Either way,
  // start over from it, as a joiner does, keeping the updates it does not cover, and sync
  // the rest; otherwise this node would never agree with the others (the room simulator
  // found it diverging for good).
  if (why == Verdict::kCheckpointFork) {
    ++counters_.checkpoint_forks;
  } else if (why == Verdict::kCheckpointMismatch) {
    ++counters_.checkpoint_mismatches;
  }  // kPending: a member told to take it, or StopAwaiting (counted there)
  // Checked before anything is dropped: a forged record or blob must not cost the log.
  const Verdict check = room_->CheckStartingPoint(record, blob);
  if (check != Verdict::kOk) return check;
  std::vector<std::vector<uint8_t>> keep = room_->RecordsOutside(record);
  if (!ResetLog()) return why;
  const Verdict v = room_->LoadCheckpoint(record, blob);
  if (v != Verdict::kOk) return v;
  // Our own updates are put back by ReplayOwn, which asks the relays about those it
  // cannot place (so that a refused one is re-issued): not here.
  absl::flat_hash_set<Hash256, IdHash> own;
  for (const std::vector<uint8_t>& r : own_kept_) {
    UpdateView view;
    if (DecodeUpdate(r, id(), &view) == Verdict::kOk) own.insert(view.id);
  }
  for (const std::vector<uint8_t>& r : keep) {
    // A root is refused after a checkpoint, and this node cannot tell one the checkpoint
    // covers (its heads may be missing here) from one it refuses: not taken again.
    if (room_->RootsRefused() && IsRoot(r, id())) continue;
    UpdateView view;
    if (DecodeUpdate(r, id(), &view) != Verdict::kOk || own.contains(view.id)) continue;
    const Verdict rv = room_->ReceiveStored(r);
    // What stays pending names parents the new base lacks: covered by the checkpoint (its
    // heads were missing here, so nothing told them apart), or a tail whose parents are on
    // their way. It is kept pending (bounded): forgotten, it would stay in seen_, and a
    // record too long for a sync datagram, sent again as a publish, would be dropped as a
    // duplicate. A member's store was forgotten with its log: what it keeps is stored
    // again. A relay's store keeps every update it acked (ResetLog leaves it).
    if (storage_ != nullptr && !config_.relay && (InLogVerdict(rv) || rv == Verdict::kPending) &&
        !storage_->Append(id(), view.id, r).ok()) {
      ++counters_.storage_errors;
    }
  }
  return Verdict::kOk;
}

void Swarm::ReplayOwn() {
  if (own_kept_.empty() || !room_->has_checkpoint()) return;
  std::vector<std::vector<uint8_t>> own = std::move(own_kept_);
  own_kept_.clear();
  for (std::vector<uint8_t>& r : own) {
    UpdateView view;
    if (DecodeUpdate(r, id(), &view) != Verdict::kOk) continue;
    const Hash256 update = view.id;
    // An own root: refused here whether or not the checkpoint covers it (Room::PlaceOne),
    // so it is not re-issued on that; a relay tells (as for one that goes pending).
    const bool root = room_->RootsRefused() && IsRoot(r, id());
    const Verdict v = root ? Verdict::kPending : room_->ReceiveStored(r);
    if (v == Verdict::kPending) {
      // Its parents lie inside the checkpoint (or are missing): only a relay that holds
      // the log can tell whether the checkpoint covers it or refuses it. It is asked
      // again (a duplicate publish is acked with that answer), or re-issued at once if a
      // relay has said so already.
      if (own_unplaced_.size() >= kAuthoredMax) continue;
      own_unplaced_[update] = r;
      if (refused_own_.contains(update)) {
        ReissueUnplaced(update);
      } else if (std::none_of(unacked_.begin(), unacked_.end(),
                              [&](const Unacked& u) { return u.id == update; })) {
        unacked_.push_back(Unacked{update, std::move(r), 0, 0});
      }
      continue;
    }
    // Kept in the new log (placed, or refused and so due for a re-issue): stored again,
    // as StartOverFrom does with what it keeps. Duplicates were kept already.
    if (storage_ != nullptr && InLogVerdict(v) && !storage_->Append(id(), update, r).ok()) {
      ++counters_.storage_errors;
    }
  }
}

void Swarm::FollowCheckpoint(int64_t now_us, base::Outbox& out) {
  if (config_.relay || fetch_ != nullptr || !room_->checkpoint_mismatch()) return;
  if (room_->checkpoint_blob().empty()) return;  // its state is not here to start from
  if (!TrustedCheckpoint(room_->checkpoint_record())) return;  // our replay stands
  const std::vector<uint8_t> record = room_->checkpoint_record();
  // A copy: starting over replaces the room, and with it the holder of these bytes.
  const std::vector<uint8_t> blob(room_->checkpoint_blob().begin(),
                                  room_->checkpoint_blob().end());
  const Hash256 before = room_->state_hash();
  if (StartOverFrom(record, blob, Verdict::kCheckpointMismatch) != Verdict::kOk) return;
  Restarted(now_us, record, blob, before, out);
}

bool Swarm::TrustedCheckpoint(Bytes record) const {
  CheckpointInfo info;
  Bytes signed_bytes;
  Signature sig;
  if (DecodeCheckpoint(record, id(), &info, &signed_bytes, &sig) != Verdict::kOk) return false;
  if (static_cast<int64_t>(info.epoch) == room_->epoch()) return true;
  if (std::all_of(info.heads.begin(), info.heads.end(),
                  [&](const Hash256& h) { return room_->BeforeRotation(h); })) {
    return true;
  }
  // A writer that made it before the rotation reached it, and the nodes that placed its
  // heads first took it (the room simulator's seed 10): most of the peers that have a
  // checkpoint in effect, and at least two, have this one.
  const Hash256 cp_id = wire::Blake2b256(record);
  size_t advertising = 0, holding = 0;
  for (const Peer& p : peers_) {
    if (!p.used || !p.checkpoint.valid()) continue;
    ++advertising;
    holding += p.checkpoint.id == cp_id;
  }
  return holding >= 2 && 2 * holding > advertising;
}

void Swarm::StopAwaiting(int64_t now_us, base::Outbox& out) {
  if (fetch_ != nullptr || awaited_record_.empty()) return;
  if (now_us - awaited_since_us_ < 5 * config_.heads_interval_us) return;
  if (StartOverFromAwaited(now_us, out)) ++counters_.checkpoint_waits;
}

bool Swarm::StartOverFromAwaited(int64_t now_us, base::Outbox& out) {
  if (awaited_record_.empty() || !TrustedCheckpoint(awaited_record_)) return false;
  const std::vector<uint8_t> record = std::move(awaited_record_);
  const std::vector<uint8_t> blob = std::move(awaited_blob_);
  awaited_record_.clear();
  awaited_blob_.clear();
  const Hash256 before = room_->state_hash();
  if (StartOverFrom(record, blob, Verdict::kPending) != Verdict::kOk) return false;
  Restarted(now_us, record, blob, before, out);
  return true;
}

// Restarted: after StartOverFrom, the checkpoint it loaded is the one this node serves
// and stores (its store forgot the log), and the log after it is synced.
void Swarm::Restarted(int64_t now_us, Bytes record, Bytes blob, const Hash256& before,
                      base::Outbox& out) {
  ReplayOwn();  // what ResetLog kept of our own
  AdoptObject(record, blob);
  if (storage_ != nullptr && !storage_->PutCheckpoint(id(), record, blob).ok()) {
    ++counters_.storage_errors;
  }
  ++counters_.checkpoints_loaded;
  digest_dirty_ = true;
  Emit(SwarmEvent::kCheckpointLoaded, object_->info.id, {});
  NoteStateChange(before);
  RequestSync(now_us, out);
}

std::string Swarm::DebugCheckpoints() const {
  std::string out = "awaited " + std::to_string(awaited_record_.size()) + " bytes, fetching " +
                    std::to_string(fetch_ != nullptr) + ", covered " +
                    std::to_string(object_ != nullptr ? object_->info.covered : 0) +
                    "; peers (covered, r: relay):";
  for (const Peer& p : peers_) {
    if (p.used) out += " " + std::to_string(p.checkpoint.covered) + (p.relay ? "r" : "");
  }
  return out;
}

void Swarm::AbandonFetch() noexcept {
  fetch_.reset();
  for (Peer& p : peers_) {
    p.pieces_inflight = 0;
    p.strikes = 0;
  }
}

void Swarm::TryAwaitedCheckpoint() {
  if (!awaited_record_.empty()) {
    // Added (its signature checked, its blob hashed: ~8 ms for 5 MB) only once its heads
    // are all here or it no longer improves on ours; this runs every tick, and an
    // untrusted checkpoint may wait here for good.
    CheckpointInfo info;
    Bytes signed_bytes;
    Signature sig;
    const bool decoded =
        DecodeCheckpoint(awaited_record_, id(), &info, &signed_bytes, &sig) == Verdict::kOk;
    const bool ready = !decoded || !room_->Improves(awaited_record_) ||
                       std::all_of(info.heads.begin(), info.heads.end(),
                                   [&](const Hash256& h) { return room_->Holds(h); });
    const Verdict v = ready ? room_->AddCheckpoint(awaited_record_, awaited_blob_)
                            : Verdict::kPending;
    if (v != Verdict::kPending) {
      awaited_record_.clear();
      awaited_blob_.clear();
    }
  }
  AdoptRoomCheckpoint();
}

// AdoptRoomCheckpoint: the room puts an awaited checkpoint in effect by itself, on the
// update that brought its last head (a flood or a sync): serve, advertise and store that
// one from then on. Without this the node advertised the checkpoint before (the room
// simulator found two members advertising one checkpoint with others in effect).
void Swarm::AdoptRoomCheckpoint() {
  if (room_->checkpoint_changes() == adopted_changes_) return;
  adopted_changes_ = room_->checkpoint_changes();
  const std::vector<uint8_t>& record = room_->checkpoint_record();
  const Bytes blob = room_->checkpoint_blob();
  if (object_ != nullptr && object_->info.id == wire::Blake2b256(record)) return;
  if (blob.empty()) {
    object_.reset();  // in effect from a cached state: this node cannot serve it
    return;
  }
  AdoptObject(record, blob);
  if (storage_ != nullptr && !storage_->PutCheckpoint(id(), record, blob).ok()) {
    ++counters_.storage_errors;
  }
}

void Swarm::FetchTick(int64_t now_us, base::Outbox& out) noexcept {
  if (fetch_ == nullptr) return;
  Fetch& f = *fetch_;
  // Only the newest checkpoint is advertised: once no peer offers this one any more (they
  // all moved on to a newer one), nobody will answer for it. Give it up; the next heads
  // name the newer one. (The room simulator found members fetching a superseded
  // checkpoint forever, and never syncing again.)
  bool offered = false;
  for (const Peer& p : peers_) {
    offered |= p.used && p.checkpoint.id == f.info.id && p.strikes < kStrikesMax;
  }
  if (!offered) {
    const bool empty = room_->log_size() == 0 && !room_->has_checkpoint();
    AbandonFetch();
    if (empty) RequestSync(now_us, out);
    return;
  }
  // O(pieces of the level) per tick: ~5,000 for a 5 MB checkpoint, fine at tick rates.
  for (uint32_t i = 0; i < f.state.size(); ++i) {
    if (f.state[i] != PieceState::kRequested || now_us - f.sent_us[i] < config_.retry_us) {
      continue;
    }
    Peer& p = peers_[f.sent_to[i]];
    if (p.pieces_inflight > 0) --p.pieces_inflight;
    f.state[i] = PieceState::kMissing;
    f.cursor = std::min(f.cursor, i);
  }
  RequestPieces(now_us, out);
}

}  // namespace ringpeer::room
