// Network-size estimators, each reported with a 95% confidence interval.
//
// Density: the k nearest ids to a random target, at XOR distances d_1 < ... < d_m (as
// fractions of the id space), behave like the first m points of a Poisson process of rate
// N; so (m - 1) / d_m is an unbiased estimate of N with relative sd 1/sqrt(m - 2).
// Averaging s lookups gives sd ~ 1/sqrt(s (m - 2)).
//
// Collision (birthday) estimate: random walks sample nodes; among n samples, the number
// of colliding pairs C has mean ~ n^2 / (2N) for uniform samples. A walk samples a node
// in proportion to its degree, so we use the degree-corrected form of Katzir et al.
// (2011): N = (sum d_i)(sum 1/d_i) / (2 C). Pairs from the same walk fewer than
// kWalkPairGap steps apart are not counted (a walk bouncing back is not a collision).
//
// KNOWN BIAS (measured: about -50% at 10,000 nodes; see tests/sim/README.md): the degree
// correction is exact only for a walk on an undirected graph, where a node is visited in
// proportion to its degree. Routing-table links are one-way, and a node is visited in
// proportion to how many tables hold it (early, long-lived nodes are in far more tables
// than others), which no node knows. Visits concentrate, collisions double, the estimate
// halves. Its interval covers sampling error only, not this bias. A fix needs a walk over
// a relation both ends know (e.g. "each holds the other in its table", checked by the
// next hop) or a reversible, degree-corrected (Metropolis-Hastings) walk over it, which
// needs the walk request to name the previous hop: a wire change. Use the density
// estimate; this one is a cross-check of order of magnitude.
// Pure functions and a sample buffer; thread-compatible.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace ringpeer::dht {

enum class SizeMethod : uint8_t { kDensity, kCollision };

struct SizeEstimate {
  SizeMethod method = SizeMethod::kDensity;
  double estimate = 0;  // nodes
  double low = 0;       // 95% confidence interval
  double high = 0;
  uint32_t samples = 0;    // lookups (density) or walk samples (collision)
  uint64_t messages = 0;   // requests sent plus replies received for this estimate
  bool ok = false;         // false: too few samples to say anything
};

// DensitySample: (m - 1) / d_m for distances sorted ascending. 0 if m < 3.
double DensitySample(std::span<const double> sorted_distances) noexcept;
// DensityEstimate: mean of per-lookup samples with a normal-approximation interval.
SizeEstimate DensityEstimate(std::span<const double> samples) noexcept;

// Steps apart within one walk below which two visits are not counted as a collision.
inline constexpr uint32_t kWalkPairGap = 3;

struct WalkSample {
  uint64_t node = 0;     // fingerprint of the node id
  uint32_t degree = 1;   // its routing table size
  uint16_t walk = 0;
  uint16_t step = 0;
};
// CollisionEstimate: the degree-corrected birthday estimate. Sorts `samples`.
SizeEstimate CollisionEstimate(std::vector<WalkSample>& samples);

}  // namespace ringpeer::dht
