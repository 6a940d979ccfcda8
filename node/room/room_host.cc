#include "node/room/room_host.h"

#include <algorithm>
#include <climits>

#include "base/assert.h"
#include "node/room/planted.h"

namespace ringpeer::room {

RoomHost::RoomHost(const RoomHostConfig& config, RoomStorage* storage, wire::Encoder* encoder,
                   base::Rng* rng, SwarmListener* listener)
    : config_(config), storage_(storage), encoder_(encoder), rng_(rng), listener_(listener) {
  RP_ASSERT(encoder_ != nullptr);
  RP_ASSERT(rng_ != nullptr);
  RP_ASSERT(!config.swarm.relay || storage_ != nullptr);  // a relay acks only what is durable
  rooms_.reserve(config.rooms_max);
  // Per-source admission counts: only a relay admits rooms (a member's host never does,
  // and the simulator's thousands of nodes should not pay 24 KB each for them).
  if (config.swarm.relay) sources_ = std::make_unique<SourceRooms[]>(kSourceEntries);
  dropped_max_ = std::min(kDroppedMax, std::max<size_t>(4, size_t{2} * config.rooms_max));
  dropped_.reserve(dropped_max_);
}

absl::StatusOr<Swarm*> RoomHost::Open(Bytes genesis,
                                      std::span<const std::vector<uint8_t>> epochs, bool store,
                                      const KeyPair* identity) {
  if (rooms_.size() >= config_.rooms_max) return absl::ResourceExhaustedError("room table full");
  // An app room's reducer comes from the application (the listener); a relay that does
  // not run the app carries the room unread.
  SwarmListener* listener = listener_;
  auto app = [listener](const Genesis& g) -> std::unique_ptr<Reducer> {
    return listener != nullptr ? listener->MakeAppReducer(g) : nullptr;
  };
  auto room = Room::OpenApp(genesis, identity != nullptr ? identity : config_.identity, app,
                            /*carrier=*/config_.swarm.relay);
  if (!room.ok()) return room.status();
  const Hash256 room_id = (*room)->id();
  if (rooms_.contains(room_id)) return absl::AlreadyExistsError("room already served");
  for (const auto& e : epochs) {
    const Verdict v = (*room)->AddKeyEpoch(e);
    if (v != Verdict::kOk) return absl::InvalidArgumentError(VerdictName(v));
  }
  if (store && storage_ != nullptr) {
    absl::Status s = storage_->PutGenesis(room_id, genesis);
    for (size_t i = 0; s.ok() && i < epochs.size(); ++i) {
      s = storage_->PutKeyEpoch(room_id, static_cast<uint32_t>(i), epochs[i]);
    }
    if (!s.ok()) return s;
  }
  std::vector<std::vector<uint8_t>> records(epochs.begin(), epochs.end());
  auto swarm = std::make_unique<Swarm>(std::move(*room), std::move(records), config_.swarm,
                                       storage_, encoder_, rng_, listener_);
  swarm->set_genesis_record(std::vector<uint8_t>(genesis.begin(), genesis.end()));
  swarm->set_flood_queue(&floods_);
  Swarm* raw = swarm.get();
  rooms_.emplace(room_id, std::move(swarm));
  ordered_.push_back(raw);
  return raw;
}

absl::StatusOr<Swarm*> RoomHost::Create(Bytes genesis,
                                        std::span<const std::vector<uint8_t>> epochs,
                                        const KeyPair* identity) {
  return Open(genesis, epochs, /*store=*/true, identity);
}

absl::StatusOr<Swarm*> RoomHost::Join(int64_t now_us, Bytes genesis,
                                      std::span<const std::vector<uint8_t>> epochs,
                                      std::span<const base::Endpoint> bootstrap,
                                      base::Outbox& out, const KeyPair* identity) {
  absl::StatusOr<Swarm*> swarm = absl::InternalError("unset");
  // A member's cache (a client's data directory): a room joined before is reopened from
  // what was stored, so the join asks only for what happened since. The stored records
  // pass every check again but the signature (Room::ReceiveStored: our own checksummed
  // store); a member far behind a checkpoint starts over from it (Swarm::ResetLog).
  if (!config_.swarm.relay && storage_ != nullptr) swarm = OpenCached(genesis, epochs, identity);
  if (!swarm.ok()) swarm = Create(genesis, epochs, identity);
  if (!swarm.ok()) return swarm;
  for (const base::Endpoint& e : bootstrap) (*swarm)->Connect(now_us, e, out);
  return swarm;
}

absl::StatusOr<Swarm*> RoomHost::JoinById(int64_t now_us, const Hash256& room_id,
                                          std::span<const base::Endpoint> bootstrap,
                                          base::Outbox& out, const KeyPair* identity) {
  RP_ASSERT(!config_.swarm.relay);  // relays serve rooms from a join's genesis instead
  if (Swarm* swarm = Find(room_id)) {
    for (const base::Endpoint& e : bootstrap) swarm->Connect(now_us, e, out);
    return swarm;
  }
  if (storage_ != nullptr && storage_->Contains(room_id)) {
    auto loaded = storage_->Load(room_id);
    if (loaded.ok() && !loaded->genesis.empty()) {
      auto swarm = OpenCached(loaded->genesis, loaded->key_epochs, identity);
      if (swarm.ok()) {
        for (const base::Endpoint& e : bootstrap) (*swarm)->Connect(now_us, e, out);
        return swarm;
      }
    }
  }
  if (bootstrap.empty()) {
    return absl::InvalidArgumentError("no peer to ask for the room (a short invite needs a "
                                      "bootstrap address)");
  }
  auto it = std::find_if(by_id_.begin(), by_id_.end(),
                         [&](const ByIdJoin& j) { return j.room_id == room_id; });
  if (it == by_id_.end()) {
    if (by_id_.size() >= kByIdJoinsMax) return absl::ResourceExhaustedError("too many joins");
    by_id_.push_back(ByIdJoin{room_id, {}, {}, 0});
    it = by_id_.end() - 1;
  }
  if (identity != nullptr) it->identity = *identity;
  for (const base::Endpoint& e : bootstrap) {
    if (std::find(it->bootstrap.begin(), it->bootstrap.end(), e) == it->bootstrap.end()) {
      it->bootstrap.push_back(e);
    }
  }
  AskGenesis(now_us, *it, out);
  return nullptr;
}

bool RoomHost::Joining(const Hash256& room_id) const noexcept {
  return std::any_of(by_id_.begin(), by_id_.end(),
                     [&](const ByIdJoin& j) { return j.room_id == room_id; });
}

void RoomHost::AskGenesis(int64_t now_us, ByIdJoin& j, base::Outbox& out) noexcept {
  for (const base::Endpoint& e : j.bootstrap) {
    std::span<uint8_t> buf = out.Buffer();
    if (buf.empty()) break;
    const size_t n = encoder_->RoomJoin(buf, j.room_id, config_.swarm.self, /*relay=*/false, {},
                                        /*want_genesis=*/true);
    if (n > 0) out.Commit(n, e);
  }
  j.next_us = now_us + kByIdRetryUs;
}

// OnGenesis: a peer's answer to a join by id. The record must hash to the room id we
// asked for (ParseGenesis computes it and checks the admin's signature): a relay can
// withhold the room, but not pass off another. Control path: opening allocates.
wire::Verdict RoomHost::OnGenesis(int64_t now_us, const base::Endpoint& from,
                                  const wire::Message& msg, base::Outbox& out) noexcept {
  const Hash256 room_id = wire::RoomOf(msg);
  auto it = std::find_if(by_id_.begin(), by_id_.end(),
                         [&](const ByIdJoin& j) { return j.room_id == room_id; });
  if (it == by_id_.end()) return wire::Verdict::kUnexpectedReply;
  const auto* rec = msg.room_epoch()->record();
  const std::vector<uint8_t> record(rec->begin(), rec->end());  // aligned for the Verifier
  Genesis g;
  if (ParseGenesis(record, &g) != Verdict::kOk || g.room_id != room_id) {
    ++genesis_refused_;
    return wire::Verdict::kBadField;
  }
  ByIdJoin j = std::move(*it);
  by_id_.erase(it);
  auto swarm = Open(record, {}, /*store=*/true, j.identity ? &*j.identity : nullptr);
  if (!swarm.ok()) return wire::Verdict::kRoomRefused;
  (*swarm)->Connect(now_us, from, out);
  for (const base::Endpoint& e : j.bootstrap) {
    if (e != from) (*swarm)->Connect(now_us, e, out);
  }
  return wire::Verdict::kOk;
}

absl::StatusOr<Swarm*> RoomHost::OpenCached(Bytes genesis,
                                            std::span<const std::vector<uint8_t>> epochs,
                                            const KeyPair* identity) {
  Genesis g;
  if (ParseGenesis(genesis, &g) != Verdict::kOk) return absl::InvalidArgumentError("genesis");
  // Refusals that say nothing about the cache come first: it must survive them.
  if (rooms_.size() >= config_.rooms_max) return absl::ResourceExhaustedError("room table full");
  if (rooms_.contains(g.room_id)) return absl::AlreadyExistsError("room already served");
  auto loaded = storage_->Load(g.room_id);
  if (!loaded.ok()) return loaded.status();  // not cached (NotFound) or unreadable
  ++cache_.opened;
  // The cache may know later key epochs than the invite (a rotation seen before); the
  // longer list wins when it opens, else the invite's.
  absl::StatusOr<Swarm*> swarm = absl::InternalError("unset");
  // (Stored under the room id, the hash of its genesis: the genesis is the invite's.)
  if (loaded->key_epochs.size() > epochs.size()) {
    swarm = Open(genesis, loaded->key_epochs, /*store=*/true, identity);
  }
  if (!swarm.ok()) {
    // The cached epochs did not open (or were not longer): the invite's, with the cached
    // updates that they cover. Nothing is deleted: an error here is the invite's or the
    // environment's, and the cache stays for the next join.
    swarm = Open(genesis, epochs, /*store=*/true, identity);
  }
  if (!swarm.ok()) return swarm.status();
  (*swarm)->Restore(*loaded);
  return swarm;
}

absl::Status RoomHost::Restore() {
  if (storage_ == nullptr) return absl::OkStatus();
  for (const Hash256& room_id : storage_->Rooms()) {
    // More stored rooms than the table holds (rooms unloaded when idle): the rest stay in
    // storage and are loaded when a member joins them.
    if (rooms_.size() >= config_.rooms_max) break;
    auto swarm = LoadStored(room_id);
    if (!swarm.ok()) return swarm.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<Swarm*> RoomHost::LoadStored(const Hash256& room_id) {
  auto loaded = storage_->Load(room_id);
  if (!loaded.ok()) return loaded.status();
  auto swarm = Open(loaded->genesis, loaded->key_epochs, /*store=*/false);
  if (!swarm.ok()) return swarm.status();
  (*swarm)->Restore(*loaded);
  return swarm;
}

void RoomHost::Erase(const Hash256& room_id) {
  auto it = rooms_.find(room_id);
  if (it == rooms_.end()) return;
  ordered_.erase(std::find(ordered_.begin(), ordered_.end(), it->second.get()));
  rooms_.erase(it);
}

void RoomHost::Close(const Hash256& room_id, base::Outbox& out) {
  std::erase_if(by_id_, [&](const ByIdJoin& j) { return j.room_id == room_id; });
  auto it = rooms_.find(room_id);
  if (it == rooms_.end()) return;
  it->second->Leave(out);
  Erase(room_id);
}

std::array<uint64_t, 4> RoomHost::rooms_by_reducer() const noexcept {
  std::array<uint64_t, 4> n{};
  for (const auto& [id, swarm] : rooms_) {
    const auto kind = static_cast<size_t>(swarm->room().genesis().reducer);
    if (kind < n.size()) ++n[kind];
  }
  return n;
}

uint64_t RoomHost::rooms_with_checkpoint() const noexcept {
  uint64_t n = 0;
  for (const auto& [id, swarm] : rooms_) n += swarm->room().has_checkpoint() ? 1 : 0;
  return n;
}

Swarm* RoomHost::Find(const Hash256& room_id) noexcept {
  auto it = rooms_.find(room_id);
  return it == rooms_.end() ? nullptr : it->second.get();
}

wire::Verdict RoomHost::OnMessage(int64_t now_us, const base::Endpoint& from,
                                  const wire::Message& msg, base::Outbox& out) noexcept {
  RP_ASSERT(msg.is_room());
  Swarm* swarm = Find(wire::RoomOf(msg));
  if (swarm == nullptr && msg.type() == wire::MessageType::kRoomEpoch &&
      msg.room_epoch()->genesis()) {
    return OnGenesis(now_us, from, msg, out);
  }
  if (swarm == nullptr) swarm = ServeOnJoin(now_us, from, msg);
  if (swarm == nullptr) return wire::Verdict::kUnexpectedReply;  // not a room served here
  // Update outcomes move only while a swarm handles a message: what this one moved joins
  // the host's totals, which outlive closed rooms (/metrics).
  const uint64_t accepted = swarm->counters().accepted;
  const uint64_t rejected = swarm->counters().rejected;
  const wire::Verdict v = swarm->OnMessage(now_us, from, msg, out);
  updates_accepted_ += swarm->counters().accepted - accepted;
  updates_rejected_ += swarm->counters().rejected - rejected;
  return v;
}

// ServeOnJoin: a relay starts serving a room when a member's RoomJoin names it: one it
// stored and unloaded is loaded again; a new one needs its genesis in the join and passes
// admission (Admit). The record's admin signature is checked and its hash must be the
// room id the message names, so a stranger can only make us serve a real room.
// Control path for the relay (a new room, or a reload, allocates).
Swarm* RoomHost::ServeOnJoin(int64_t now_us, const base::Endpoint& from,
                             const wire::Message& msg) noexcept {
  if (!config_.swarm.relay || msg.type() != wire::MessageType::kRoomJoin) return nullptr;
  const Hash256 room_id = wire::RoomOf(msg);
  if (storage_ != nullptr && storage_->Contains(room_id)) {
    // A reload costs a read of the room's log: only for a proved source.
    const SourceCheck* sources = config_.admission.sources;
    if (sources != nullptr && !sources->Proved(from, now_us)) {
      ++admission_.refused_unproved;
      return nullptr;
    }
    if (rooms_.size() >= config_.rooms_max && !MakeSpace(now_us)) {
      ++admission_.refused_full;
      return nullptr;
    }
    auto swarm = LoadStored(room_id);
    if (!swarm.ok()) return nullptr;
    ++admission_.reloaded;
    return *swarm;
  }
  const auto* genesis = msg.room_join()->genesis();
  if (genesis == nullptr) return nullptr;
  // The cheap refusals (an unproved source, one over its hourly count) come before the
  // genesis signature is checked, so a squatter's refused joins cost no verification.
  SourceRooms* quota = nullptr;
  if (!PreAdmit(now_us, from, &quota)) return nullptr;
  const Bytes record(genesis->data(), genesis->size());
  Genesis parsed;
  if (ParseGenesis(record, &parsed) != Verdict::kOk || parsed.room_id != room_id) {
    return nullptr;
  }
  if (!Listed(parsed)) return nullptr;
  if (rooms_.size() >= config_.rooms_max && !MakeSpace(now_us)) {
    ++admission_.refused_full;
    return nullptr;
  }
  auto swarm = Open(record, {}, /*store=*/true);
  if (!swarm.ok()) return nullptr;
  if (quota != nullptr) ++quota->count;
  ++admission_.opened;
  return *swarm;
}

bool RoomHost::Listed(const Genesis& genesis) noexcept {
  const AdmissionConfig& a = config_.admission;
  if (a.policy != RoomAdmission::kListed) return true;
  const bool listed = std::any_of(a.allowed.begin(), a.allowed.end(), [&](const Hash256& h) {
    return h == genesis.room_id || h == genesis.admin;
  });
  if (!listed) ++admission_.refused_policy;
  return listed;
}

bool RoomHost::PreAdmit(int64_t now_us, const base::Endpoint& from,
                        SourceRooms** quota) noexcept {
  const AdmissionConfig& a = config_.admission;
  *quota = nullptr;
  if (a.policy == RoomAdmission::kListed) return true;
  // Open: a forged source must not be able to make us serve rooms (the joiner's retry
  // comes after our probe has proved its address), and one source only so many per hour.
  if (a.sources != nullptr && !a.sources->Proved(from, now_us)) {
    ++admission_.refused_unproved;
    return false;
  }
  if (a.new_rooms_per_source_per_hour == 0) return true;
  RP_ASSERT(sources_ != nullptr);  // PreAdmit runs on relays only (ServeOnJoin)
  constexpr int64_t kHourUs = 3'600'000'000;
  const uint64_t key = from.HashAddressOnly() | 1;
  SourceRooms* set = &sources_[(key & (kSourceEntries / 4 - 1)) * 4];
  SourceRooms* e = nullptr;
  for (uint32_t w = 0; w < 4 && e == nullptr; ++w) {
    if (set[w].key == key) e = &set[w];
  }
  if (e == nullptr) {
    // A new source takes the entry whose hour started longest ago (an attacker cycling
    // through sources resets only entries it pays a proved address for).
    e = &set[0];
    for (uint32_t w = 1; w < 4; ++w) {
      if (set[w].window_us < e->window_us) e = &set[w];
    }
    *e = SourceRooms{key, now_us, 0};
  }
  if (now_us - e->window_us >= kHourUs) {
    e->window_us = now_us;
    e->count = 0;
  }
  if (e->count >= a.new_rooms_per_source_per_hour) {
    ++admission_.refused_rate;
    return false;
  }
  *quota = e;
  return true;
}

bool RoomHost::MakeSpace(int64_t now_us) noexcept {
  // Never written (no update, no key epoch, no checkpoint): nothing anyone was promised
  // is in it; dropped and forgotten, the oldest first.
  Hash256 victim{};
  bool found = false;
  int64_t oldest = INT64_MAX;
  for (Swarm* swarm : ordered_) {
    const Room& r = swarm->room();
    if (r.log_size() == 0 && r.epoch() < 0 && !r.has_checkpoint() &&
        swarm->last_message_us() < oldest) {
      oldest = swarm->last_message_us();
      victim = swarm->id();
      found = true;
    }
  }
  if (found) {
    Erase(victim);
    if (storage_ != nullptr) (void)storage_->Forget(victim);
    ++admission_.dropped_unwritten;
    if (dropped_.size() < dropped_max_) dropped_.push_back(victim);
    return true;
  }
  // Else the idlest room silent past idle_unload_us: unloaded, its storage kept. Its peers
  // are not told (a member that finds it silent joins again, which reloads it).
  oldest = now_us - config_.admission.idle_unload_us;
  for (Swarm* swarm : ordered_) {
    if (swarm->last_message_us() <= oldest) {
      oldest = swarm->last_message_us();
      victim = swarm->id();
      found = true;
    }
  }
  if (!found || storage_ == nullptr) return false;
  Erase(victim);
  ++admission_.unloaded_idle;
  if (dropped_.size() < dropped_max_) dropped_.push_back(victim);
  return true;
}

// Tick: every room, every call. O(rooms); fine while rooms per shard stay in the hundreds.
void RoomHost::Tick(int64_t now_us, base::Outbox& out) noexcept {
  for (ByIdJoin& j : by_id_) {
    if (now_us >= j.next_us) AskGenesis(now_us, j, out);
  }
  for (Swarm* swarm : ordered_) swarm->Tick(now_us, out);
}

std::optional<absl::Status> RoomHost::CommitStart(base::Outbox& out) {
  if (storage_ == nullptr) return std::nullopt;
  // A batch that finished since the caller's last poll is taken first: its acks leave (or
  // are dropped) before the queued ones are marked as the new batch's. Marking first would
  // let the old batch's OK release acks of updates the new batch has not made durable.
  std::optional<absl::Status> earlier = CommitPoll(out);
  for (Swarm* swarm : ordered_) swarm->MarkAcks();
  if (RP_PLANTED(kAckEarly)) ReleaseAcks(out);
  storage_->CommitStart();
  return earlier;
}

std::optional<absl::Status> RoomHost::CommitPoll(base::Outbox& out) {
  if (storage_ == nullptr) return std::nullopt;
  std::optional<absl::Status> r = storage_->CommitPoll();
  if (!r.has_value()) return r;
  if (r->ok()) {
    ReleaseAcks(out);
  } else {
    DropAcks();
  }
  return r;
}

absl::Status RoomHost::CommitAndRelease(base::Outbox& out) {
  if (storage_ == nullptr) return absl::OkStatus();
  storage_->CommitWait();
  const std::optional<absl::Status> earlier = CommitStart(out);  // polls the earlier first
  storage_->CommitWait();
  const std::optional<absl::Status> now = CommitPoll(out);
  if (earlier.has_value() && !earlier->ok()) return *earlier;
  return now.value_or(absl::OkStatus());
}

void RoomHost::ReleaseAcks(base::Outbox& out) noexcept {
  for (Swarm* swarm : ordered_) swarm->ReleaseAcks(out);
}

void RoomHost::DropAcks() noexcept {
  for (Swarm* swarm : ordered_) swarm->DropAcks();
}

}  // namespace ringpeer::room
