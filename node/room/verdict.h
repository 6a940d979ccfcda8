// room::Verdict: the outcome of checking one untrusted room record (STYLE.md section 4).
//
// A rejection is a normal outcome: the record is dropped, counted under its Verdict, and
// nothing in the room changes. Values index per-room counters, so new reasons are appended
// before kCount. Pure values; thread-compatible.
#pragma once

#include <cstdint>

namespace ringpeer::room {

enum class Verdict : uint8_t {
  kOk = 0,
  kTooShort,           // smaller than any valid record
  kTooLong,            // larger than the record's size limit
  kVerifyFailed,       // the FlatBuffers Verifier rejected the envelope or the body
  kBadField,           // verified, but a field is out of range (kind, counts, sizes)
  kWrongRoom,          // names another room
  kDuplicate,          // already in the log, pending or held (not an error; not re-verified)
  kUnknownEpoch,       // signed under a key epoch this node does not know
  kBadSignature,       // the signature does not verify under the epoch's key
  kStaleEpoch,         // an old key after rotation, not an ancestor of the rotation point
  kPending,            // accepted, waiting for its parents (held in the bounded pending set)
  kPendingFull,        // parents missing and the pending set is full: dropped
  kBehindCheckpoint,   // branches from inside the checkpoint in effect
  kOverCap,            // the reducer refused it: the state would pass its size cap
  kBadPayload,         // the reducer could not parse the decrypted payload
  kUndecryptable,      // no content key for its epoch, or the ciphertext is corrupt
  kEpochGap,           // a key epoch that does not follow the latest one known
  kNoKey,              // this node lacks the key the operation needs
  kCheckpointMismatch, // a checkpoint whose state hash disagrees with our own replay
  kStaleCheckpoint,    // a checkpoint ranked below the one in effect (room.h: Better)
  kBadBlob,            // checkpoint state blob: wrong hash, size or unreadable
  kCheckpointFork,     // a better checkpoint that does not cover the one this node started
                       // from: it cannot reorder what it never held, so it starts over
  kReissueTwin,        // in the log, but another update of its re-issue line was applied
                       // first (room.h, "Re-issue"): the state did not change
  kCount
};

inline constexpr int kVerdictCount = static_cast<int>(Verdict::kCount);

// VerdictName: a stable snake_case name for metrics, logs and test messages.
inline const char* VerdictName(Verdict v) noexcept {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kTooShort: return "too_short";
    case Verdict::kTooLong: return "too_long";
    case Verdict::kVerifyFailed: return "verify_failed";
    case Verdict::kBadField: return "bad_field";
    case Verdict::kWrongRoom: return "wrong_room";
    case Verdict::kDuplicate: return "duplicate";
    case Verdict::kUnknownEpoch: return "unknown_epoch";
    case Verdict::kBadSignature: return "bad_signature";
    case Verdict::kStaleEpoch: return "stale_epoch";
    case Verdict::kPending: return "pending";
    case Verdict::kPendingFull: return "pending_full";
    case Verdict::kBehindCheckpoint: return "behind_checkpoint";
    case Verdict::kOverCap: return "over_cap";
    case Verdict::kBadPayload: return "bad_payload";
    case Verdict::kUndecryptable: return "undecryptable";
    case Verdict::kEpochGap: return "epoch_gap";
    case Verdict::kNoKey: return "no_key";
    case Verdict::kCheckpointMismatch: return "checkpoint_mismatch";
    case Verdict::kStaleCheckpoint: return "stale_checkpoint";
    case Verdict::kBadBlob: return "bad_blob";
    case Verdict::kCheckpointFork: return "checkpoint_fork";
    case Verdict::kReissueTwin: return "reissue_twin";
    case Verdict::kCount: break;
  }
  return "unknown";
}

}  // namespace ringpeer::room
