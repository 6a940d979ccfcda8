// Swarm: catch-up. The requester sends RoomSync with its heads; the server answers with
// the first `window` records of Room::PlanSync, packed into RoomSyncData datagrams
// (records too large to share a datagram come as RoomPublish), or "take the checkpoint".
// The requester asks again with its new heads when the window is complete, so the stream
// is ack-clocked: a lost datagram costs one retry interval and the re-sent tail.
#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "node/room/swarm.h"
#include "node/room/swarm_internal.h"

namespace ringpeer::room {
namespace {

// Packing (swarm.h): a record up to kSyncInlineRecordBytesMax rides inside a RoomSyncData;
// larger ones (up to kUpdateInlineBytesMax) go as RoomPublish, and those larger still (up
// to kUpdateBytesMax) as RoomUpdatePiece datagrams. The budget leaves room for the
// checkpoint reference the datagram carries when the sender has a checkpoint (~96 bytes):
// the old 1040 bytes did not, and a relay with a checkpoint that packed a full group failed
// its encoder (found by the room simulator).
// RoomWire.SyncDataPackingBudgetFitsWithCheckpoint checks it.
// Datagrams one window may span (the requester tracks them in a 512-bit mask).
constexpr size_t kWindowDatagramsMax = 512;
// Window when the requester names none.
constexpr uint16_t kSyncWindowDefault = 64;

}  // namespace

void Swarm::StartSync(int64_t now_us, uint32_t slot, base::Outbox& out) noexcept {
  RP_ASSERT(slot < peers_.size());
  RP_ASSERT(peers_[slot].used);
  sync_ = SyncClient{};
  sync_.active = true;
  sync_.peer = slot;
  SendSyncRequest(now_us, out);
}

void Swarm::RequestSync(int64_t now_us, base::Outbox& out) noexcept {
  // Prefer a relay (it holds the whole log), then the peer with the longest log.
  int best = -1;
  for (size_t i = 0; i < peers_.size(); ++i) {
    const Peer& p = peers_[i];
    if (!p.used) continue;
    if (best < 0 || (p.relay && !peers_[best].relay) ||
        (p.relay == peers_[best].relay && p.log_size > peers_[best].log_size)) {
      best = static_cast<int>(i);
    }
  }
  if (best >= 0) StartSync(now_us, static_cast<uint32_t>(best), out);
}

void Swarm::SendSyncRequest(int64_t now_us, base::Outbox& out) noexcept {
  RP_ASSERT(sync_.active);
  sync_.txid = rng_->Next();
  sync_.expected = 0;
  sync_.received = 0;
  std::memset(sync_seen_, 0, sizeof(sync_seen_));
  sync_.deadline_us = now_us + config_.retry_us;
  std::vector<Hash256> heads = room_->heads();
  if (heads.size() > wire::kRoomSyncHeadsMax) heads.resize(wire::kRoomSyncHeadsMax);
  std::span<uint8_t> buf = Buffer(out);
  if (buf.empty()) return;
  Send(peers_[sync_.peer].addr,
       encoder_->RoomSync(buf, id(), sync_.txid, config_.sync_window, heads,
                          object_ != nullptr ? &object_->info.id : nullptr),
       out);
  ++counters_.syncs_sent;
}

wire::Verdict Swarm::OnSync(int64_t now_us, const base::Endpoint& from,
                            const wire::Message& msg, base::Outbox& out) noexcept {
  Peer* p = FindPeer(from);
  if (p == nullptr) return wire::Verdict::kUnverifiedSender;
  const wire::fb::RoomSync* m = msg.room_sync();
  std::vector<Hash256> heads;
  if (m->heads() != nullptr) {
    for (const wire::fb::Id256* h : *m->heads()) heads.push_back(wire::FromWireId(*h));
  }
  // A relay peer gets the log, not "take the checkpoint" (the room simulator found relays
  // that had lost updates in a crash waiting forever for them).
  // A peer that holds our checkpoint gets the log after it, never "take the checkpoint"
  // (found stuck: two members that started from the same checkpoint, each holding an
  // update the other lacked, answering each other "take the checkpoint" forever).
  const bool holds = m->checkpoint() != nullptr && object_ != nullptr &&
                     wire::FromWireId(*m->checkpoint()) == object_->info.id;
  const SyncPlan plan = room_->PlanSync(heads, /*whole_log=*/p->relay, holds);
  ++counters_.syncs_served;
  if (plan.take_checkpoint && object_ != nullptr && object_->tree_checked) {
    if (!p->serve.TryTake(now_us)) return wire::Verdict::kRateLimited;
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return wire::Verdict::kSendQueueFull;
    Send(from, encoder_->RoomSyncData(buf, id(), m->txid(), 0, 1, false, true, object_->info,
                                      {}), out);
    return wire::Verdict::kOk;
  }
  const uint16_t asked = m->window() == 0 ? kSyncWindowDefault : m->window();
  const size_t n = std::min<size_t>(plan.updates.size(), std::min(asked, config_.sync_window));
  // Pack: group boundaries of the small records; large ones go separately.
  std::vector<uint32_t> group_end;  // exclusive end index (into plan.updates) per datagram
  size_t bytes = 0, records = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t size = plan.updates[i].size();
    if (size > kSyncInlineRecordBytesMax) continue;
    if (records > 0 && (records == wire::kRoomSyncRecordsMax ||
                        bytes + size + kSyncRecordFramingBytes > kSyncDataRecordBytes)) {
      group_end.push_back(static_cast<uint32_t>(i));
      bytes = records = 0;
    }
    bytes += size + kSyncRecordFramingBytes;
    ++records;
  }
  group_end.push_back(static_cast<uint32_t>(n));  // the last group (maybe empty)
  // Rate limit: as many datagrams as the peer's serving bucket allows, in order.
  size_t allowed = 0;
  while (allowed < std::min(group_end.size(), kWindowDatagramsMax) && p->serve.TryTake(now_us)) {
    ++allowed;
  }
  if (allowed == 0) return wire::Verdict::kRateLimited;
  const bool more = allowed < group_end.size() || plan.updates.size() > n;
  size_t start = 0;
  Bytes group[wire::kRoomSyncRecordsMax];
  for (size_t g = 0; g < allowed; ++g) {
    size_t k = 0;
    for (size_t i = start; i < group_end[g]; ++i) {
      const Bytes r = plan.updates[i];
      if (r.size() <= kSyncInlineRecordBytesMax) {
        group[k++] = r;
        continue;
      }
      // Too large to share a datagram: its own RoomPublish, or pieces past one datagram.
      UpdateView view;
      std::memcpy(Scratch(), r.data(), r.size());
      if (DecodeUpdate(Bytes(Scratch(), r.size()), id(), &view) == Verdict::kOk) {
        SendRecord(from, view.id, r, out);
      }
    }
    start = group_end[g];
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return wire::Verdict::kSendQueueFull;
    const size_t size = encoder_->RoomSyncData(
        buf, id(), m->txid(), static_cast<uint16_t>(g), static_cast<uint16_t>(allowed), more,
        false, checkpoint_info(), std::span<const Bytes>(group, k));
    if (size == 0) return wire::Verdict::kSendQueueFull;  // the budget says never (tested)
    Send(from, size, out);
  }
  return wire::Verdict::kOk;
}

wire::Verdict Swarm::OnSyncData(int64_t now_us, const base::Endpoint& from,
                                const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::RoomSyncData* m = msg.room_sync_data();
  if (!sync_.active || !(peers_[sync_.peer].addr == from) || m->txid() != sync_.txid) {
    return wire::Verdict::kUnexpectedReply;
  }
  const uint16_t seq = m->seq();
  // A window spans at most kWindowDatagramsMax datagrams (OnSync never sends more): a
  // larger count could never be completed from seqs below it, and would hold the sync
  // open until it timed out. Decode already refused count 0 and seq >= count.
  if (seq >= kWindowDatagramsMax || m->count() > kWindowDatagramsMax) {
    return wire::Verdict::kBadField;
  }
  if (sync_seen_[seq / 64] & (uint64_t{1} << (seq % 64))) return wire::Verdict::kOk;  // dup
  sync_seen_[seq / 64] |= uint64_t{1} << (seq % 64);
  if (m->take_checkpoint()) {
    sync_.active = false;
    const wire::RoomCheckpointInfo cp = wire::FromWireCheckpoint(m->checkpoint());
    peers_[sync_.peer].checkpoint = cp;
    // A member with a log that the peer will not sync (it started from this checkpoint,
    // or what we lack is larger than the checkpoint) starts over from the checkpoint.
    // Not when ours ranks above it: then the peer lags behind us (a relay that has not
    // fetched our newest checkpoint yet, answering a writer whose heads it lacks), and
    // starting over would take this node back (found by the pruning long-run test).
    // The log is dropped only once the checkpoint is here and trusted (FinishFetch): an
    // evicted member's peer could tell us to take one it signed with its old key.
    if (!config_.relay && cp.valid() && fetch_ == nullptr &&
        (room_->log_size() > 0 || room_->has_checkpoint()) &&
        (object_ == nullptr ||
         (object_->info.id != cp.id && cp.covered >= object_->info.covered)) &&
        std::find(tried_.begin(), tried_.end(), cp.id) == tried_.end()) {
      if (!awaited_record_.empty() && wire::Blake2b256(awaited_record_) == cp.id) {
        StartOverFromAwaited(now_us, out);  // fetched already, waiting for its heads
      } else {
        start_over_for_ = cp.id;
        start_over_ = true;
      }
    }
    MaybeFetch(now_us, cp, out);
    return wire::Verdict::kOk;
  }
  if (m->records() != nullptr && !(fetch_ != nullptr && room_->log_size() == 0)) {
    for (const wire::fb::RoomRecord* r : *m->records()) {
      Bytes record(r->bytes()->data(), r->bytes()->size());
      UpdateView view;
      std::memcpy(Scratch(), record.data(), record.size());
      if (DecodeUpdate(Bytes(Scratch(), record.size()), id(), &view) != Verdict::kOk) {
        ++counters_.rejected;
        continue;
      }
      ++counters_.sync_records_received;
      bool accepted = false;
      // The peer that sent it is its sender for the application's events (an update with
      // no sender reads as our own); no ack: it is not a publish.
      Accept(record, view.id, from, /*ack=*/false, &accepted, &view);  // view: in the scratch
      if (accepted) {
        ++counters_.accepted;
        ++sync_.brought;
      }
    }
  }
  sync_.expected = m->count();
  sync_.more = m->more();
  if (++sync_.received < sync_.expected) return wire::Verdict::kOk;
  if (sync_.more) {
    sync_.attempts = 0;
    SendSyncRequest(now_us, out);
  } else {
    sync_.active = false;
    TryAwaitedCheckpoint();
    // What the sync brought, the other peers may lack too (a relay's members, when it
    // synced from another relay): tell them our heads now rather than at the next period.
    if (sync_.brought > 0) {
      for (Peer& p : peers_) {
        if (p.used && SlotOf(&p) != sync_.peer) SendHeads(now_us, p, out);
      }
    }
  }
  return wire::Verdict::kOk;
}

void Swarm::SyncTick(int64_t now_us, base::Outbox& out) noexcept {
  if (!sync_.active || now_us < sync_.deadline_us) return;
  if (++sync_.attempts > kSyncAttemptsMax) {
    sync_.active = false;  // the next differing heads start over, maybe elsewhere
    return;
  }
  SendSyncRequest(now_us, out);
}

}  // namespace ringpeer::room
