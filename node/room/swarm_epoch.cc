// Swarm: key epochs on the network (issue 17). An epoch of a room with more than ~6
// members is larger than a datagram; it travels as RoomUpdatePiece datagrams with
// `key_epoch` set, reassembled within the same memory bounds as long updates (swarm.cc)
// and checked once whole: the id the pieces name is the record's hash, and the room
// checks the admin's signature. Epochs apply strictly in order; one that completes before
// its predecessor is held (kFutureEpochsMax) and applied when the gap is filled. A peer
// that sends a record the admin did not sign is dropped and refused from then on.
#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "node/room/swarm.h"
#include "node/room/swarm_internal.h"

namespace ringpeer::room {
namespace {

size_t PiecesOf(size_t bytes) noexcept {
  return (bytes + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes;
}

}  // namespace

void Swarm::SendEpoch(size_t index, const base::Endpoint& to, base::Outbox& out) noexcept {
  RP_ASSERT(index < epochs_.size());
  RP_ASSERT(epoch_ids_.size() == epochs_.size());
  const std::vector<uint8_t>& record = epochs_[index];
  if (record.size() <= kUpdateInlineBytesMax) {
    std::span<uint8_t> buf = Buffer(out);
    if (!buf.empty()) Send(to, encoder_->RoomEpoch(buf, id(), record), out);
    return;
  }
  for (size_t i = 0; i < PiecesOf(record.size()); ++i) {
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return;  // send queue full: the receiver asks for what it lacks
    Send(to, encoder_->RoomUpdatePiece(buf, id(), epoch_ids_[index], record,
                                       static_cast<uint16_t>(i), /*key_epoch=*/true), out);
    ++counters_.update_pieces_sent;
  }
}

void Swarm::SendEpochsFrom(uint32_t first, const base::Endpoint& to,
                           base::Outbox& out) noexcept {
  size_t sent_bytes = 0;
  for (size_t e = first; e < epochs_.size(); ++e) {
    if (sent_bytes > 0 && sent_bytes + epochs_[e].size() > kEpochBurstBytesMax) return;
    if (Buffer(out).empty()) return;
    SendEpoch(e, to, out);
    sent_bytes += epochs_[e].size();
  }
}

Verdict Swarm::AddKeyEpoch(Bytes record, base::Outbox& out) noexcept {
  // The room reads 8-byte aligned: a copy (a rotation is rare; the control path).
  std::vector<uint8_t> copy(record.begin(), record.end());
  const Verdict v = room_->AddKeyEpoch(copy);
  if (v != Verdict::kOk) return v;
  const Hash256 hash = wire::Blake2b256(copy);
  TakeEpoch(std::move(copy), hash, base::Endpoint{}, {}, out);
  return v;
}

void Swarm::TakeEpoch(std::vector<uint8_t> record, const Hash256& hash,
                      const base::Endpoint& except, Bytes datagram, base::Outbox& out) noexcept {
  RP_ASSERT(room_->epoch() >= 0);
  RP_ASSERT(static_cast<size_t>(room_->epoch()) == epochs_.size());
  seen_.Insert(IdPrefix64(hash));
  epochs_.push_back(std::move(record));
  epoch_ids_.push_back(hash);
  digest_dirty_ = true;  // a rotation may set updates aside
  if (storage_ != nullptr &&
      !storage_->PutKeyEpoch(id(), static_cast<uint32_t>(room_->epoch()), epochs_.back()).ok()) {
    ++counters_.storage_errors;
  }
  StorePlaced(nullptr);
  // Updates the new keys let the room place (held for this epoch). Announced when a peer
  // sent the epoch (as before pieces); the admin's own rotation leaves their author
  // unknown here (an event without a peer would read as our own update).
  if (except.valid()) {
    for (const Hash256& placed : room_->placed()) {
      Emit(SwarmEvent::kUpdateApplied, placed, except);
    }
  }
  if (!datagram.empty()) {
    Flood(datagram, except, out);  // the bytes received
    return;
  }
  for (Peer& p : peers_) {
    if (!p.used || p.addr == except) continue;
    SendEpoch(epochs_.size() - 1, p.addr, out);
  }
}

wire::Verdict Swarm::OnEpoch(int64_t now_us, const base::Endpoint& from,
                             const wire::Message& msg, base::Outbox& out) noexcept {
  const wire::fb::RoomEpoch* m = msg.room_epoch();
  if (m->genesis()) return wire::Verdict::kUnexpectedReply;  // we have the room already
  if (FindPeer(from) == nullptr) return wire::Verdict::kUnverifiedSender;
  return OnEpochRecord(now_us, from, Bytes(m->record()->data(), m->record()->size()),
                       msg.bytes(), out);
}

wire::Verdict Swarm::OnEpochRecord(int64_t now_us, const base::Endpoint& from, Bytes record,
                                   Bytes datagram, base::Outbox& out) noexcept {
  const Hash256 hash = wire::Blake2b256(record);
  if (seen_.Contains(IdPrefix64(hash))) return wire::Verdict::kOk;
  std::vector<uint8_t> copy(record.begin(), record.end());  // aligned for the room
  const Verdict v = room_->AddKeyEpoch(copy);
  if (v == Verdict::kDuplicate) {
    seen_.Insert(IdPrefix64(hash));
    return wire::Verdict::kOk;
  }
  if (v == Verdict::kEpochGap) {
    // Signed by the admin (the room checks that first) but not the next one: held.
    const bool held = std::any_of(future_epochs_.begin(), future_epochs_.end(),
                                  [&](const std::vector<uint8_t>& f) { return f == copy; });
    if (!held) {
      if (future_epochs_.size() >= kFutureEpochsMax) future_epochs_.erase(future_epochs_.begin());
      future_epochs_.push_back(std::move(copy));
      ++counters_.epochs_held;
    }
    return wire::Verdict::kOk;
  }
  if (v != Verdict::kOk) {
    // Not the admin's, or not this room's: the sender lied (an honest node forwards only
    // epochs it verified), so it is dropped and refused.
    ++counters_.epochs_refused;
    RefusePeer(from);
    return v == Verdict::kBadSignature ? wire::Verdict::kBadSignature : wire::Verdict::kBadField;
  }
  ++counters_.epochs_received;
  TakeEpoch(std::move(copy), hash, from, datagram, out);
  ApplyHeldEpochs(out);
  // Still behind the sender: our heads ask it for the next ones at once, not in 2 s.
  Peer* p = FindPeer(from);
  if (p != nullptr && p->epoch > room_->epoch()) {
    const bool partial = std::any_of(partials_.begin(), partials_.end(), [&](const Partial& q) {
      return q.key_epoch && q.from == from;
    });
    if (!partial) SendHeads(now_us, *p, out);
  }
  return wire::Verdict::kOk;
}

// ApplyHeldEpochs: the held epochs that now follow, in order. Bounded: each pass applies
// one or ends, and at most kFutureEpochsMax are held.
void Swarm::ApplyHeldEpochs(base::Outbox& out) noexcept {
  bool progress = true;
  while (progress && !future_epochs_.empty()) {
    progress = false;
    for (size_t i = 0; i < future_epochs_.size(); ++i) {
      const Verdict v = room_->AddKeyEpoch(future_epochs_[i]);
      if (v == Verdict::kEpochGap) continue;
      std::vector<uint8_t> record = std::move(future_epochs_[i]);
      future_epochs_.erase(future_epochs_.begin() + static_cast<std::ptrdiff_t>(i));
      if (v == Verdict::kOk) {
        ++counters_.epochs_received;
        const Hash256 hash = wire::Blake2b256(record);
        TakeEpoch(std::move(record), hash, base::Endpoint{}, {}, out);
      }
      progress = true;
      break;
    }
  }
}

void Swarm::RefusePeer(const base::Endpoint& addr) noexcept {
  if (!addr.valid()) return;
  if (!Refused(addr)) {
    if (refused_.size() >= kRefusedPeersMax) refused_.erase(refused_.begin());
    refused_.push_back(addr);
    ++counters_.peers_refused;
  }
  std::erase(joining_, addr);
  if (Peer* p = FindPeer(addr)) DropPeer(p);
}

wire::Verdict Swarm::OnEpochPieceGet(int64_t now_us, Peer& p, const Hash256& hash,
                                     const wire::Message& msg, base::Outbox& out) noexcept {
  const auto it = std::find(epoch_ids_.begin(), epoch_ids_.end(), hash);
  if (it == epoch_ids_.end()) return wire::Verdict::kUnexpectedReply;
  const size_t index = static_cast<size_t>(it - epoch_ids_.begin());
  const std::vector<uint8_t>& record = epochs_[index];
  if (record.size() <= kUpdateInlineBytesMax) return wire::Verdict::kUnexpectedReply;
  const auto* missing = msg.room_update_piece_get()->missing();
  for (size_t i = 0; i < PiecesOf(record.size()) && i / 8 < missing->size(); ++i) {
    if ((missing->Get(static_cast<flatbuffers::uoffset_t>(i / 8)) & (1u << (i % 8))) == 0) {
      continue;
    }
    if (!p.serve.TryTake(now_us)) return wire::Verdict::kRateLimited;
    std::span<uint8_t> buf = Buffer(out);
    if (buf.empty()) return wire::Verdict::kSendQueueFull;
    Send(p.addr, encoder_->RoomUpdatePiece(buf, id(), hash, record, static_cast<uint16_t>(i),
                                           /*key_epoch=*/true), out);
    ++counters_.update_pieces_sent;
  }
  return wire::Verdict::kOk;
}

}  // namespace ringpeer::room
