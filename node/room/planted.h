// Planted bugs: test-only switches that break one promise of the room code on purpose, so
// that the simulator's checkers (tests/sim, issue 13) can show they catch the break.
//
// They exist only in binaries compiled with RINGPEER_PLANTED_BUGS (the simulator's
// `ringpeer-sim-planted`, built from its own copy of the room and core libraries). In every
// other build RP_PLANTED(...) is the constant false and the code it guards is dead: no
// shipped binary contains a switch.
#pragma once

#ifdef RINGPEER_PLANTED_BUGS
#include <cstdint>

namespace ringpeer::planted {
enum class Bug : uint8_t {
  kNone,
  kAckEarly,             // a relay acks an update before the storage made it durable
  kOldKeyAfterRotation,  // an old-key update that is not an ancestor of the rotation point
                         // is accepted
  kSkipSignature,        // updates from peers are not signature-checked
};
inline Bug g_bug = Bug::kNone;
}  // namespace ringpeer::planted

#define RP_PLANTED(bug) (::ringpeer::planted::g_bug == ::ringpeer::planted::Bug::bug)
#else
#define RP_PLANTED(bug) false
#endif
