// Verdict: the outcome of checking untrusted input (STYLE.md section 4).
//
// A bad datagram is a normal outcome, not an error: it is dropped and counted under its
// Verdict, never logged per packet, never thrown. Values index per-shard counters, so
// new reasons are appended before kCount.
#pragma once

#include <cstdint>

namespace ringpeer::wire {

enum class Verdict : uint8_t {
  kOk = 0,
  kTooShort,          // shorter than the header
  kTooLong,           // longer than kDatagramBytesMax
  kBadMagic,          // not ours
  kBadVersion,        // a version we do not speak (newer nodes are counted here)
  kBadLength,         // header length disagrees with the datagram
  kBadReserved,       // reserved header bits set
  kUnknownType,       // a message type we do not know
  kVerifyFailed,      // the FlatBuffers Verifier rejected the body
  kBadField,          // verified, but a field is out of range or inconsistent
  kBadSignature,      // a signature did not verify
  kRateLimited,       // the sender's token bucket was empty
  kUnexpectedReply,   // a reply to no request of ours (unknown or expired txid)
  kChallengeLimited,  // no budget left this second for signing challenges
  kMailboxFull,       // a cross-shard mailbox was full
  kSendQueueFull,     // no free send slot this iteration
  kUnverifiedSender,  // a message that needs a verified peer came from an unverified one
  kTableFull,         // a bounded table had no room (new peer not admitted)
  kRoomRefused,       // a well-formed, correctly signed room record its room's rules refuse
                      // (an old key after rotation, behind the checkpoint, a known reject)
  kCount
};

inline constexpr int kVerdictCount = static_cast<int>(Verdict::kCount);

// VerdictName: a stable snake_case name for metrics and status output.
inline const char* VerdictName(Verdict v) noexcept {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kTooShort: return "too_short";
    case Verdict::kTooLong: return "too_long";
    case Verdict::kBadMagic: return "bad_magic";
    case Verdict::kBadVersion: return "bad_version";
    case Verdict::kBadLength: return "bad_length";
    case Verdict::kBadReserved: return "bad_reserved";
    case Verdict::kUnknownType: return "unknown_type";
    case Verdict::kVerifyFailed: return "verify_failed";
    case Verdict::kBadField: return "bad_field";
    case Verdict::kBadSignature: return "bad_signature";
    case Verdict::kRateLimited: return "rate_limited";
    case Verdict::kUnexpectedReply: return "unexpected_reply";
    case Verdict::kChallengeLimited: return "challenge_limited";
    case Verdict::kMailboxFull: return "mailbox_full";
    case Verdict::kSendQueueFull: return "send_queue_full";
    case Verdict::kUnverifiedSender: return "unverified_sender";
    case Verdict::kTableFull: return "table_full";
    case Verdict::kRoomRefused: return "room_refused";
    case Verdict::kCount: break;
  }
  return "unknown";
}

}  // namespace ringpeer::wire
