#include "tests/sim/seeded_random.h"

#include <sodium.h>

#include <cstring>

#include "base/rng.h"

namespace ringpeer::sim {
namespace {

base::Rng g_rng(1);

const char* Name() { return "ringpeer-sim seeded"; }
uint32_t Random() { return static_cast<uint32_t>(g_rng.Next() >> 32); }
void Stir() {}
uint32_t Uniform(const uint32_t upper_bound) {
  return upper_bound < 2 ? 0 : static_cast<uint32_t>(g_rng.Uniform(upper_bound));
}
void Buf(void* const buf, const size_t size) {
  g_rng.Fill({static_cast<uint8_t*>(buf), size});
}
int Close() { return 0; }

randombytes_implementation g_impl = {Name, Random, Stir, Uniform, Buf, Close};

}  // namespace

void UseSeededRandomBytes(uint64_t seed) {
  g_rng = base::Rng(seed * 0xD1B54A32D192ED03ull + 7);
  randombytes_set_implementation(&g_impl);
}

}  // namespace ringpeer::sim
