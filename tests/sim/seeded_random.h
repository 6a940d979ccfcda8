// Seeded randomness for libsodium in the simulators: the few places where the room code
// takes randomness from libsodium itself rather than from an injected source (sealing a key
// epoch's grants with crypto_box_seal) would otherwise make two runs of one seed differ.
// Simulator and test binaries only: it replaces the process's libsodium random source.
#pragma once

#include <cstdint>

namespace ringpeer::sim {

// UseSeededRandomBytes: from now on libsodium's randombytes_* return a stream determined
// by `seed` (not cryptographically secure: simulated keys protect nothing).
void UseSeededRandomBytes(uint64_t seed);

}  // namespace ringpeer::sim
