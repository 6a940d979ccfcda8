// Room: input records, key epochs, writes and sync planning. The order, folding and
// checkpoint barrier live in room_order.cc.
#include "node/room/room.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/assert.h"
#include "node/room/planted.h"
#include "flatbuffers/flatbuffers.h"

namespace ringpeer::room {

Room::Room(Genesis genesis, const KeyPair* identity, std::unique_ptr<Reducer> reducer)
    : genesis_(std::move(genesis)), reducer_(std::move(reducer)) {
  if (identity != nullptr) identity_ = *identity;
  base_hash_ = genesis_.room_id;
  if (reducer_ != nullptr) {
    reducer_->Clear();
    reducer_->Serialize(&base_state_);
  }
}

Room::~Room() = default;

absl::StatusOr<std::unique_ptr<Room>> Room::Open(Bytes genesis_record, const KeyPair* identity,
                                                 std::unique_ptr<Reducer> custom) {
  return OpenApp(
      genesis_record, identity,
      [&custom](const Genesis&) { return std::move(custom); }, /*carrier=*/false);
}

absl::StatusOr<std::unique_ptr<Room>> Room::OpenApp(
    Bytes genesis_record, const KeyPair* identity,
    const std::function<std::unique_ptr<Reducer>(const Genesis&)>& app, bool carrier) {
  Genesis g;
  Verdict v = ParseGenesis(genesis_record, &g);
  if (v != Verdict::kOk) {
    return absl::InvalidArgumentError(std::string("room: genesis rejected: ") + VerdictName(v));
  }
  std::unique_ptr<Reducer> reducer;
  if (g.reducer != ReducerKind::kOpaque) {
    reducer = MakeReducer(g.reducer);
  } else if (app) {
    reducer = app(g);
  }
  if (reducer == nullptr && !carrier) {
    return absl::InvalidArgumentError(
        "room: an app room (reducer kind opaque) needs the application's reducer");
  }
  return std::unique_ptr<Room>(new Room(std::move(g), identity, std::move(reducer)));
}

Verdict Room::Count(Verdict v) noexcept {
  ++verdict_counts_[static_cast<int>(v)];
  return v;
}

bool Room::can_read() const noexcept {
  return !epochs_.empty() && epochs_.back().content_key.has_value();
}

bool Room::can_write() const noexcept {
  // A carrier (no reducer) cannot fold the state its write would change.
  return can_read() && epochs_.back().write.has_value() && reducer_ != nullptr;
}

const ContentKey* Room::ContentKeyFor(uint32_t epoch) const noexcept {
  if (epoch >= epochs_.size() || !epochs_[epoch].content_key) return nullptr;
  return &*epochs_[epoch].content_key;
}

bool Room::ParseHeld(Bytes record, Held* out) {
  // Called only on records that passed DecodeUpdate, so GetRoot is safe here.
  const auto* env = flatbuffers::GetRoot<fb::Signed>(record.data());
  const auto* body = flatbuffers::GetRoot<fb::UpdateBody>(env->body()->data());
  out->record = record;  // a view: placing copies it once into the arena, holding owns it
  out->epoch = body->epoch();
  out->reissue_of = ReissueOf(*body);
  out->parents.clear();
  if (body->parents() != nullptr) {
    for (const fb::Key256* k : *body->parents()) out->parents.push_back(FromKey(*k));
  }
  return true;
}

// ---- key epochs ----

Verdict Room::AddKeyEpoch(Bytes record) {
  placed_.clear();
  KeyEpoch k;
  Verdict v = ParseKeyEpoch(record, id(), genesis_.admin, identity_ ? &*identity_ : nullptr, &k);
  if (v != Verdict::kOk) return Count(v);
  if (k.epoch < epochs_.size()) return Count(Verdict::kDuplicate);
  if (k.epoch != epochs_.size()) return Count(Verdict::kEpochGap);
  EpochState st;
  st.write_key = k.write_key;
  st.content_key = k.content_key;
  if (k.write_seed) st.write = KeyPair::FromSeed(*k.write_seed);
  st.previous_box = std::move(k.previous_box);
  st.previous_nonce = k.previous_nonce;
  st.rotation_heads = k.rotation_heads;
  epochs_.push_back(std::move(st));
  if (k.previous_key && k.epoch > 0 && !epochs_[k.epoch - 1].content_key) {
    epochs_[k.epoch - 1].content_key = k.previous_key;
  }
  BackfillKeys();
  reader_ = false;
  for (const EpochState& e : epochs_) reader_ |= reducer_ != nullptr && e.content_key.has_value();
  if (k.epoch > 0) PruneForRotation(k.rotation_heads, k.epoch);
  // Keys may have changed what this node can decrypt: re-fold (rotations are rare).
  RebuildOrder();
  Release({});
  return Count(Verdict::kOk);
}

void Room::BackfillKeys() {
  // Each epoch seals its predecessor's content key, so the newest key opens all history.
  for (size_t e = epochs_.size() - 1; e > 0; --e) {
    EpochState& cur = epochs_[e];
    EpochState& prev = epochs_[e - 1];
    if (!cur.content_key || prev.content_key || cur.previous_box.empty()) continue;
    std::vector<uint8_t> plain;
    if (OpenContent(*cur.content_key, cur.previous_nonce, id(), cur.previous_box, &plain) &&
        plain.size() == 32) {
      ContentKey key;
      std::memcpy(key.data(), plain.data(), 32);
      prev.content_key = key;
    }
  }
}

// ---- updates ----

Bytes Room::RecordOf(const Hash256& id) const noexcept {
  auto it = index_.find(id);
  if (it == index_.end()) return {};
  const Entry& e = entries_[it->second];
  return e.record.bytes();
}

Verdict Room::Receive(Bytes record, bool check_signature) {
  placed_.clear();
  UpdateView u;
  Verdict v = DecodeUpdate(record, id(), &u);
  if (v != Verdict::kOk) return Count(v);
  return ReceiveDecoded(record, u, check_signature);
}

Verdict Room::Receive(Bytes record, const UpdateView& decoded) {
  RP_ASSERT(decoded.signed_bytes.data() >= record.data() &&
            decoded.signed_bytes.data() + decoded.signed_bytes.size() <=
                record.data() + record.size());
  placed_.clear();
  return ReceiveDecoded(record, decoded, /*check_signature=*/true);
}

Verdict Room::ReceiveDecoded(Bytes record, const UpdateView& u, bool check_signature) {
  Verdict v;
  // Duplicates are dropped before the signature: a relay verifies each update once.
  if (index_.contains(u.id) || pending_.contains(u.id) || quarantine_.contains(u.id) ||
      WasPruned(u.id)) {
    return Count(Verdict::kDuplicate);
  }
  if (u.epoch >= epochs_.size()) return Count(Verdict::kUnknownEpoch);
  if (check_signature && !RP_PLANTED(kSkipSignature) &&
      !CheckUpdateSignature(u, epochs_[u.epoch].write_key)) {
    return Count(Verdict::kBadSignature);
  }
  Held held;
  ParseHeld(record, &held);
  v = Admit(u.id, std::move(held));
  TryAwaitedCheckpoint();
  return Count(v);
}

Verdict Room::Admit(const Hash256& id, Held held) {
  bool placed = false;
  Verdict v = PlaceOne(id, &held, &placed);
  Release(placed ? std::span<const Hash256>(&id, 1) : std::span<const Hash256>());
  return v;
}

void Room::Expect(const Hash256& id, std::vector<uint32_t>* placed) {
  // The id is an ancestor of a rotation point, and so are the parents of a pending update
  // with that id: an update held pending from before the rotation was known names its
  // parents only here (PlaceOne marks them when it places one). Without this a member
  // held such a chain's lower part in quarantine for good (the room simulator's seed 10).
  // The walk goes through ids expected already (a second rotation naming the same heads
  // must still collect the logged parents), each once.
  std::vector<Hash256> work{id};
  absl::flat_hash_set<Hash256, IdHash> visited;
  while (!work.empty()) {
    const Hash256 h = work.back();
    work.pop_back();
    if (!visited.insert(h).second) continue;
    if (expected_.insert(h).second && quarantine_.contains(h)) unquarantine_.push_back(h);
    auto it = pending_.find(h);
    if (it == pending_.end()) continue;
    for (const Hash256& p : it->second.parents) {
      auto in_log = index_.find(p);
      if (in_log != index_.end()) {
        if (placed != nullptr) placed->push_back(in_log->second);
      } else if (!visited.contains(p)) {
        work.push_back(p);
      }
    }
  }
}

void Room::Hold(const Hash256& id, Held&& held) {
  // Bounded: the oldest held update goes first. The FIFO may hold ids already released;
  // it is compacted when it grows past twice the bound.
  while (quarantine_.size() >= kQuarantineMax && !quarantine_fifo_.empty()) {
    quarantine_.erase(quarantine_fifo_.front());
    quarantine_fifo_.pop_front();
  }
  if (quarantine_fifo_.size() > 2 * kQuarantineMax) {
    std::deque<Hash256> live;
    for (const Hash256& q : quarantine_fifo_) {
      if (quarantine_.contains(q)) live.push_back(q);
    }
    quarantine_fifo_.swap(live);
  }
  held.Own();
  quarantine_.emplace(id, std::move(held));
  quarantine_fifo_.push_back(id);
}

Verdict Room::PlaceOne(const Hash256& id, Held* held, bool* placed) {
  *placed = false;
  const bool old_epoch = held->epoch + 1 < epochs_.size();
  if (old_epoch) {
    // An old key after rotation is accepted only as an ancestor of the rotation point.
    if (!expected_.contains(id) && !RP_PLANTED(kOldKeyAfterRotation)) {
      Hold(id, std::move(*held));
      return Verdict::kStaleEpoch;
    }
    for (const Hash256& p : held->parents) {
      if (!index_.contains(p)) Expect(p);
    }
  }
  size_t missing = 0;
  bool refused = false;
  for (const Hash256& p : held->parents) {
    auto it = index_.find(p);
    if (it == index_.end()) {
      ++missing;
      continue;
    }
    const Entry& parent = entries_[it->second];
    refused |= parent.refused ||
               (parent.segment != kTailSegment && !cp_head_slots_.contains(it->second));
  }
  // A root (no parents) after a checkpoint branches from the room's start, which every
  // checkpoint covers: refused, like any update that branches from inside it. Without this
  // a node that started from a checkpoint (or pruned behind one), which cannot tell that
  // an old root is covered, took the room's first updates again as a new branch.
  refused |= held->parents.empty() && RootsRefused();
  if (missing == 0 && refused) {
    // Kept outside the order: a better checkpoint may yet cover it (ApplyLine). Its
    // children are refused alike when they come (the worklist releases them).
    *placed = true;
    MaybeDue(AddEntry(id, std::move(*held), /*refused=*/true));  // our own: re-issued
    return Verdict::kBehindCheckpoint;
  }
  if (missing > 0) {
    if (pending_.size() >= kPendingMax) return Verdict::kPendingFull;
    for (const Hash256& p : held->parents) {
      if (!index_.contains(p)) waiting_[p].push_back(id);
    }
    held->Own();
    pending_.emplace(id, std::move(*held));
    return Verdict::kPending;
  }
  *placed = true;
  placed_.push_back(id);
  return Insert(id, std::move(*held));
}

void Room::Release(std::span<const Hash256> placed) {
  // Nothing waits (a relay keeping up): done, with no work to copy.
  if (unquarantine_.empty() && (waiting_.empty() || placed.empty())) return;
  // A worklist rather than recursion: a long chain of pending updates cannot grow the stack.
  RP_ASSERT(!releasing_);  // one worklist: Release must not run inside itself
  releasing_ = true;
  std::vector<Hash256>& work = release_work_;
  work.assign(placed.begin(), placed.end());
  while (!work.empty() || !unquarantine_.empty()) {
    if (work.empty()) {
      Hash256 q = unquarantine_.back();
      unquarantine_.pop_back();
      auto it = quarantine_.find(q);
      if (it == quarantine_.end() || index_.contains(q) || pending_.contains(q)) continue;
      Held held = std::move(it->second);
      quarantine_.erase(it);
      bool placed = false;
      PlaceOne(q, &held, &placed);
      if (placed) work.push_back(q);
      continue;
    }
    Hash256 id = work.back();
    work.pop_back();
    auto w = waiting_.find(id);
    if (w == waiting_.end()) continue;
    std::vector<Hash256> children = std::move(w->second);
    waiting_.erase(w);
    for (const Hash256& child : children) {
      auto it = pending_.find(child);
      if (it == pending_.end()) continue;
      bool ready = std::all_of(it->second.parents.begin(), it->second.parents.end(),
                               [&](const Hash256& p) { return index_.contains(p); });
      if (!ready) continue;  // still listed under its other missing parents
      Held held = std::move(it->second);
      pending_.erase(it);
      bool placed = false;
      PlaceOne(child, &held, &placed);
      if (placed) work.push_back(child);
    }
  }
  releasing_ = false;
}

absl::StatusOr<std::vector<uint8_t>> Room::Write(Bytes payload, RandomFn random,
                                                 const Hash256* reissue_of) {
  if (!can_write()) return absl::FailedPreconditionError("room: no write key");
  // Conservative cap check before signing: any built-in reducer grows the state by at most
  // the payload plus a few bytes of framing, so an honest writer never sends an update
  // that every reader would refuse.
  if (reducer_->StateBytes() + payload.size() + 64 > genesis_.state_bytes_max) {
    return absl::ResourceExhaustedError("room: the state would pass its size cap");
  }
  std::vector<Hash256> parents = heads();
  if (parents.size() > kParentsMax) parents.resize(kParentsMax);
  if (payload.size() > UpdatePayloadBytesMax(parents.size())) {
    return absl::InvalidArgumentError("room: payload too large for one update");
  }
  const uint32_t epoch = static_cast<uint32_t>(epochs_.size() - 1);
  Nonce nonce;
  random(nonce);
  std::vector<uint8_t> record = MakeUpdate(id(), epoch, *epochs_.back().write,
                                           *epochs_.back().content_key, parents, payload, nonce,
                                           reissue_of);
  if (record.empty()) return absl::InvalidArgumentError("room: update record too large");
  // Our own update: decode (cheap) but skip verifying our own signature.
  UpdateView u;
  Verdict v = DecodeUpdate(record, id(), &u);
  RP_ASSERT(v == Verdict::kOk);
  Held held;
  ParseHeld(record, &held);
  v = Count(Admit(u.id, std::move(held)));
  if (v == Verdict::kOverCap) {
    // An app's reducer may grow the state by more than the check above allows: every
    // replica refuses this update alike (it stays in the log and changes nothing).
    return absl::ResourceExhaustedError(
        "room: the reducer refused the update: the state would pass its size cap");
  }
  if (v != Verdict::kOk) {
    return absl::InternalError(std::string("room: own update refused: ") + VerdictName(v));
  }
  NoteAuthored(u.id);
  return record;
}

void Room::NoteAuthored(const Hash256& update) {
  if (authored_.contains(update)) return;
  if (authored_.size() >= kAuthoredMax) {
    authored_.erase(authored_fifo_.front());
    authored_fifo_.pop_front();
  }
  authored_.insert(update);
  authored_fifo_.push_back(update);
}

bool Room::Refused(const Hash256& update) const noexcept {
  auto it = index_.find(update);
  return it != index_.end() && entries_[it->second].refused;
}

absl::StatusOr<std::vector<uint8_t>> Room::ReissueRecord(Bytes record, RandomFn random) {
  UpdateView u;
  if (DecodeUpdate(record, id(), &u) != Verdict::kOk) {
    return absl::InvalidArgumentError("room: not an update of this room");
  }
  const std::optional<Hash256> first = ReissueOf(*u.body);
  const Hash256 original = first ? *first : u.id;
  // Its line in the order already (a re-issue came back from a peer): nothing to do.
  if (auto it = index_.find(original); it != index_.end()) {
    const Entry& e = entries_[it->second];
    if (!e.dead && !e.refused) return absl::AlreadyExistsError("room: already in the order");
  }
  if (auto line = lines_.find(original); line != lines_.end()) {
    for (uint32_t s : line->second) {
      if (!entries_[s].dead && !entries_[s].refused) {
        return absl::AlreadyExistsError("room: already re-issued");
      }
    }
  }
  const ContentKey* key = ContentKeyFor(u.epoch);
  if (key == nullptr) return absl::FailedPreconditionError("room: no content key");
  Nonce nonce;
  std::memcpy(nonce.data(), u.body->nonce()->b()->Data(), nonce.size());
  const auto* cipher = u.body->ciphertext();
  std::vector<uint8_t> payload;
  if (!OpenContent(*key, nonce, id(), Bytes(cipher->data(), cipher->size()), &payload)) {
    return absl::DataLossError("room: own update does not decrypt");
  }
  auto out = Write(payload, random, &original);
  if (out.ok()) ++reissues_made_;
  return out;
}

std::vector<std::vector<uint8_t>> Room::OwnRecords() const {
  std::vector<std::vector<uint8_t>> out;
  for (const Hash256& own : authored_fifo_) {
    Bytes r = RecordOf(own);
    if (!r.empty()) out.emplace_back(r.begin(), r.end());
  }
  return out;
}

void Room::AdoptOwn(const std::vector<std::vector<uint8_t>>& records) {
  for (const auto& r : records) {
    UpdateView u;
    if (DecodeUpdate(r, id(), &u) == Verdict::kOk) NoteAuthored(u.id);
  }
}

std::vector<std::vector<uint8_t>> Room::Reissues(RandomFn random) {
  std::vector<std::vector<uint8_t>> out;
  std::vector<Hash256> due;
  due.swap(reissue_due_);
  std::vector<uint8_t> payload;
  for (const Hash256& refused : due) {
    auto it = index_.find(refused);
    if (it == index_.end()) continue;
    const uint32_t slot = it->second;
    if (entries_[slot].dead || !entries_[slot].refused) continue;  // covered since
    if (LineApplied(slot, kNoPos)) continue;  // another update of its line is in the order
    if (!Payload(refused, &payload)) continue;
    auto root = root_of_.find(slot);
    const Hash256 original = root == root_of_.end() ? refused : root->second;
    // Fails without a write key (evicted since) or when the state is full: then the
    // update stays refused, as any update a writer cannot make.
    auto record = Write(payload, random, &original);
    if (!record.ok()) continue;
    ++reissues_made_;
    out.push_back(std::move(*record));
  }
  return out;
}

// ---- queries ----

std::string Room::DebugCheckpoint() const {
  char buf[96];
  std::snprintf(buf, sizeof buf, "cp=%02x%02x%02x%02x covered=%llu gen=%u line=%zu heads:", cp_.id[0],
                cp_.id[1], cp_.id[2], cp_.id[3], static_cast<unsigned long long>(cp_.covered),
                cp_generation_, line_.size());
  std::string out = buf;
  for (const Hash256& h : cp_.heads) {
    std::snprintf(buf, sizeof buf, " %02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
    out += buf;
  }
  return out;
}

std::string Room::DebugAncestry(const Hash256& from, size_t max) const {
  // Where each of `from`'s ancestors that is not in the log is held: pending, in
  // quarantine or absent, and whether a rotation point expects it (old epochs).
  std::string out;
  std::vector<Hash256> work{from};
  absl::flat_hash_set<Hash256, IdHash> seen;
  while (!work.empty() && seen.size() < max) {
    const Hash256 h = work.back();
    work.pop_back();
    if (!seen.insert(h).second) continue;
    const Held* held = nullptr;
    const char* where = "absent";
    if (index_.contains(h)) {
      where = "log";
    } else if (auto p = pending_.find(h); p != pending_.end()) {
      held = &p->second;
      where = "pending";
    } else if (auto q = quarantine_.find(h); q != quarantine_.end()) {
      held = &q->second;
      where = "quarantine";
    }
    char buf[96];
    std::snprintf(buf, sizeof buf, " %02x%02x%02x%02x:%s%s", h[0], h[1], h[2], h[3], where,
                  expected_.contains(h) ? "+expected" : "");
    out += buf;
    if (held == nullptr) continue;
    out += "(epoch " + std::to_string(held->epoch) + ")";
    for (const Hash256& p : held->parents) work.push_back(p);
  }
  return out;
}

std::string Room::DebugRotationHeads() const {
  std::string out;
  for (size_t i = 1; i < epochs_.size(); ++i) {
    for (const Hash256& h : epochs_[i].rotation_heads) {
      out += " epoch " + std::to_string(i) + ":" + DebugAncestry(h, 32);
    }
  }
  return out;
}

std::string Room::DebugEntry(const Hash256& x) const {
  auto it = index_.find(x);
  if (it == index_.end()) {
    char buf[80];
    std::snprintf(buf, sizeof buf, "absent (pending=%d quarantine=%d expected=%d pruned=%d)",
                  pending_.contains(x), quarantine_.contains(x), expected_.contains(x),
                  WasPruned(x));
    return buf;
  }
  const Entry& e = entries_[it->second];
  char buf[64];
  std::string out;
  std::snprintf(buf, sizeof buf, "slot=%u seg=%u pos=%u base=%d ref=%d parents:", it->second,
                e.segment, e.pos, e.base, e.refused);
  out = buf;
  for (uint32_t p : e.parents) {
    std::snprintf(buf, sizeof buf, " %02x%02x%02x%02x(seg=%u,pos=%u,dead=%d)", entries_[p].id[0],
                  entries_[p].id[1], entries_[p].id[2], entries_[p].id[3], entries_[p].segment,
                  entries_[p].pos, entries_[p].dead);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, " tail_start=%u", tail_start_);
  return out + buf;
}

Verdict Room::CheckStartingPoint(Bytes record, Bytes blob) const {
  CheckpointInfo cp;
  const Verdict v = CheckCheckpoint(record, &cp);
  if (v != Verdict::kOk) return v;
  if (blob.size() != cp.blob_bytes || wire::Blake2b256(blob) != cp.blob_hash) {
    return Verdict::kBadBlob;
  }
  return Verdict::kOk;
}

std::vector<std::vector<uint8_t>> Room::RecordsOutside(Bytes record) const {
  CheckpointInfo cp;
  Bytes signed_bytes;
  Signature sig;
  std::vector<std::vector<uint8_t>> out;
  if (DecodeCheckpoint(record, id(), &cp, &signed_bytes, &sig) != Verdict::kOk) return out;
  std::vector<uint32_t> from;
  for (const Hash256& h : cp.heads) {
    auto it = index_.find(h);
    if (it != index_.end()) from.push_back(it->second);
  }
  std::vector<uint8_t> mask = AncestorMask(from);
  // Slots are in arrival order, so parents come first.
  for (uint32_t s = 0; s < entries_.size(); ++s) {
    const Entry& e = entries_[s];
    if (mask[s] || e.dead || e.base || e.record.empty()) continue;
    out.emplace_back(e.record.data(), e.record.data() + e.record.size());
  }
  return out;
}

bool Room::Improves(Bytes record) const {
  CheckpointInfo cp;
  Bytes signed_bytes;
  Signature sig;
  if (DecodeCheckpoint(record, id(), &cp, &signed_bytes, &sig) != Verdict::kOk) return false;
  return !has_checkpoint() || Better(cp, cp_);
}

std::vector<Hash256> Room::heads() const {
  std::vector<Hash256> out;
  out.reserve(heads_.size());
  for (uint32_t s : heads_) out.push_back(entries_[s].id);
  std::sort(out.begin(), out.end());
  return out;
}

Hash256 Room::state_hash() const noexcept {
  return order_.empty() ? base_hash_ : chain_.back();
}

std::vector<Hash256> Room::order() const {
  std::vector<Hash256> out;
  out.reserve(order_.size());
  for (uint32_t s : order_) out.push_back(entries_[s].id);
  return out;
}

void Room::SerializeState(std::vector<uint8_t>* out) const {
  out->clear();
  if (reader_) reducer_->Serialize(out);
}

std::vector<uint8_t> Room::AncestorMask(std::span<const uint32_t> from) const {
  std::vector<uint8_t> mask(entries_.size(), 0);
  std::vector<uint32_t> stack(from.begin(), from.end());
  while (!stack.empty()) {
    uint32_t s = stack.back();
    stack.pop_back();
    if (mask[s] || entries_[s].dead) continue;
    mask[s] = 1;
    for (uint32_t p : entries_[s].parents) {
      if (!mask[p]) stack.push_back(p);
    }
  }
  return mask;
}

SyncPlan Room::PlanSync(std::span<const Hash256> peer_heads, bool whole_log,
                        bool peer_holds_checkpoint) const {
  std::vector<uint32_t> from;
  for (const Hash256& h : peer_heads) {
    auto it = index_.find(h);
    if (it != index_.end()) from.push_back(it->second);
  }
  std::vector<uint8_t> mask = AncestorMask(from);
  SyncPlan plan;
  for (uint32_t s : order_) {
    if (mask[s]) continue;
    plan.updates.push_back(entries_[s].record.bytes());
    plan.updates_bytes += entries_[s].record.size();
  }
  if (!has_checkpoint()) return plan;
  bool peer_has_checkpoint = true;
  for (uint32_t s : cp_head_slots_) peer_has_checkpoint &= mask[s] != 0;
  if (peer_holds_checkpoint) {
    // It holds the checkpoint: what it covers is not sent (the peer has it as its base).
    std::vector<uint32_t> cp_heads(cp_head_slots_.begin(), cp_head_slots_.end());
    std::vector<uint8_t> covered = AncestorMask(cp_heads);
    SyncPlan tail;
    for (uint32_t s : order_) {
      if (mask[s] || covered[s]) continue;
      tail.updates.push_back(entries_[s].record.bytes());
      tail.updates_bytes += entries_[s].record.size();
    }
    return tail;
  }
  if (peer_has_checkpoint) return plan;
  // We started from a checkpoint of the line, or pruned the log behind one (base
  // entries), and the peer lacks it: we cannot send what it covers, and the updates after
  // it would wait for parents it will never get; or the backlog is larger than the
  // checkpoint itself.
  // A peer naming heads we neither hold nor pruned holds something we lack (it is ahead,
  // say a writer whose newest updates are still on their way): it is not behind the base.
  bool ahead = false;
  for (const Hash256& h : peer_heads) ahead |= !index_.contains(h) && !WasPruned(h);
  bool from_base = false;
  for (uint32_t s : line_.front()) from_base |= entries_[s].base && !mask[s];
  from_base &= !ahead || from.empty();
  const uint64_t checkpoint_bytes = cp_record_.size() + cp_.blob_bytes;
  if (from_base || (!whole_log && plan.updates_bytes > checkpoint_bytes)) {
    plan.take_checkpoint = true;
    plan.updates.clear();
    plan.updates_bytes = 0;
  }
  return plan;
}

bool Room::Payload(const Hash256& update, std::vector<uint8_t>* out) const {
  auto it = index_.find(update);
  if (it == index_.end()) return false;
  const Entry& e = entries_[it->second];
  if (e.base || e.record.empty()) return false;  // known by id only (from a checkpoint)
  const ContentKey* key = ContentKeyFor(e.epoch);
  if (key == nullptr) return false;
  // The record was verified when it entered the log, so reading it in place is safe.
  const auto* env = flatbuffers::GetRoot<fb::Signed>(e.record.data());
  const auto* body = flatbuffers::GetRoot<fb::UpdateBody>(env->body()->data());
  Nonce nonce;
  std::memcpy(nonce.data(), body->nonce()->b()->Data(), nonce.size());
  const auto* cipher = body->ciphertext();
  return OpenContent(*key, nonce, id(), Bytes(cipher->data(), cipher->size()), out);
}

}  // namespace ringpeer::room
