// Swarm: bounded logs (issue 16, item 4). A node with a retention (a relay: `ringpeer
// serve --room-retention-s`) notes each checkpoint it puts in effect, and once one has
// been in effect for the retention, prunes the log it covers from the room and the
// storage. Members still behind it by then are told to take the checkpoint (PlanSync);
// until then they get the log, as before.
//
// Why a retention rather than pruning at once: a member that was offline for a moment
// catches up cheaper with the updates it missed than with the whole state, and a relay
// that lags behind another still gets the log it lacks.
#include <algorithm>

#include "base/assert.h"
#include "node/room/swarm.h"

namespace ringpeer::room {

void Swarm::PruneTick(int64_t now_us) {
  if (config_.retention_us <= 0 || !room_->has_checkpoint()) return;
  if (room_->checkpoint_changes() != prune_changes_) {
    prune_changes_ = room_->checkpoint_changes();
    CheckpointInfo cp;
    Bytes signed_bytes;
    Signature sig;
    if (DecodeCheckpoint(room_->checkpoint_record(), id(), &cp, &signed_bytes, &sig) ==
        Verdict::kOk) {
      // Marks stay spaced: a newer checkpoint replaces the newest mark while that one is
      // less than retention / 16 younger than the mark before it.
      const int64_t spacing_us = config_.retention_us / 16;
      const size_t n = prune_marks_.size();
      if (n >= 2 && prune_marks_[n - 1].at_us - prune_marks_[n - 2].at_us < spacing_us) {
        prune_marks_.pop_back();
      }
      if (prune_marks_.size() == kPruneMarksMax) prune_marks_.pop_front();
      prune_marks_.push_back(PruneMark{now_us, std::move(cp.heads)});
    }
  }
  if (now_us < next_prune_us_) return;
  next_prune_us_ = now_us + std::max<int64_t>(config_.retention_us / 16, 100'000);
  // The newest mark that has been in effect for the retention; older ones are covered
  // by it (or were replaced by a checkpoint that does not nest them: then nothing is).
  size_t ripe = 0;
  while (ripe < prune_marks_.size() && now_us - prune_marks_[ripe].at_us >= config_.retention_us) {
    ++ripe;
  }
  if (ripe == 0) return;
  std::vector<Hash256> ids;
  const size_t n = room_->PruneCovered(prune_marks_[ripe - 1].heads, &ids);
  prune_marks_.erase(prune_marks_.begin(), prune_marks_.begin() + static_cast<ptrdiff_t>(ripe));
  if (n == 0 && ids.empty()) return;
  counters_.pruned += n;
  ++counters_.prunes;
  digest_dirty_ = true;
  // The store still holds the checkpoint (PutCheckpoint came when it was put in effect);
  // its covered updates go in the next commit.
  if (storage_ != nullptr && !storage_->Prune(id(), ids).ok()) ++counters_.storage_errors;
}

}  // namespace ringpeer::room
