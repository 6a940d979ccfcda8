#include "dht/size_estimate.h"

#include <algorithm>
#include <cmath>

#include "base/assert.h"

namespace ringpeer::dht {

namespace {

// StudentT975: the 97.5% quantile of Student's t with `df` degrees of freedom, by the
// Cornish-Fisher expansion around the normal's 1.96 (within 0.5% from df = 3; 2.131 at
// the 15 of a 16-lookup estimate, where the normal's 1.96 made the interval 8% too narrow).
double StudentT975(uint32_t df) noexcept {
  RP_ASSERT(df >= 1);
  constexpr double z = 1.959964;
  const double v = df, z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v);
}

}  // namespace

double DensitySample(std::span<const double> d) noexcept {
  if (d.size() < 3 || d.back() <= 0) return 0;
  return static_cast<double>(d.size() - 1) / d.back();
}

SizeEstimate DensityEstimate(std::span<const double> samples) noexcept {
  SizeEstimate e;
  e.method = SizeMethod::kDensity;
  double sum = 0;
  uint32_t n = 0;
  for (double s : samples) {
    if (s <= 0) continue;
    sum += s;
    ++n;
  }
  e.samples = n;
  if (n < 2) return e;
  const double mean = sum / n;
  double var = 0;
  for (double s : samples) {
    if (s > 0) var += (s - mean) * (s - mean);
  }
  const double se = std::sqrt(var / (n - 1) / n);
  const double t = StudentT975(n - 1);
  e.estimate = mean;
  e.low = std::max(0.0, mean - t * se);
  e.high = mean + t * se;
  e.ok = true;
  return e;
}

namespace {

bool ByNodeThenWalk(const WalkSample& a, const WalkSample& b) noexcept {
  return a.node != b.node ? a.node < b.node : a.walk < b.walk;
}

// PerWalk: how many of `s` each walk holds, indexed by walk.
std::vector<double> PerWalk(const std::vector<WalkSample>& s, size_t walks) {
  std::vector<double> n(walks, 0);
  for (const WalkSample& x : s) n[x.walk] += 1;
  return n;
}

// PoissonBounds: Wilson-Hilferty approximation of the exact 95% interval of a Poisson
// mean, given a (possibly fractional) count c > 0. Good to a few percent from c = 1.
void PoissonBounds(double c, double* low, double* high) noexcept {
  constexpr double kZ = 1.96;
  const double l = c * std::pow(1 - 1 / (9 * c) - kZ / (3 * std::sqrt(c)), 3);
  const double h1 = c + 1;
  *low = std::max(0.0, l);
  *high = h1 * std::pow(1 - 1 / (9 * h1) + kZ / (3 * std::sqrt(h1)), 3);
}

}  // namespace

bool WalkMoves(uint32_t degree_from, uint32_t degree_to, bool held, base::Rng& rng) noexcept {
  if (!held || degree_to == 0) return false;
  return degree_to <= degree_from || rng.Uniform(degree_to) < degree_from;
}

SizeEstimate CollisionEstimate(std::vector<WalkSample>& visits, std::vector<WalkSample>& seen) {
  SizeEstimate e;
  e.method = SizeMethod::kCollision;
  e.samples = static_cast<uint32_t>(visits.size());
  // Visits are sightings too.
  seen.insert(seen.end(), visits.begin(), visits.end());
  size_t walks = 0;
  for (const WalkSample& s : seen) walks = std::max<size_t>(walks, size_t{s.walk} + 1);
  const std::vector<double> nv = PerWalk(visits, walks);
  const std::vector<double> ns = PerWalk(seen, walks);
  // Pairs of a visit and a sighting from another walk.
  double pairs = 0, total_v = 0, total_s = 0;
  for (size_t w = 0; w < walks; ++w) {
    total_v += nv[w];
    total_s += ns[w];
    pairs -= nv[w] * ns[w];
  }
  pairs += total_v * total_s;
  std::sort(visits.begin(), visits.end(), ByNodeThenWalk);
  std::sort(seen.begin(), seen.end(), ByNodeThenWalk);
  // Merge: for each node, matches = sum over walks a != b of visits_a x sightings_b. Each
  // match is also credited to the visiting walk (out) and the sighting walk (in), for the
  // jackknife below.
  std::vector<double> out(walks, 0), in(walks, 0);
  double matches = 0, clump_sq = 0;
  size_t j = 0;
  for (size_t i = 0; i < visits.size();) {
    const uint64_t node = visits[i].node;
    size_t i_end = i;
    while (i_end < visits.size() && visits[i_end].node == node) ++i_end;
    while (j < seen.size() && seen[j].node < node) ++j;
    size_t j_end = j;
    while (j_end < seen.size() && seen[j_end].node == node) ++j_end;
    const double v_node = static_cast<double>(i_end - i);
    const double s_node = static_cast<double>(j_end - j);
    // CountOf: how many of [b, e) belong to `walk` (the range is sorted by walk).
    auto count_of = [](const std::vector<WalkSample>& x, size_t b, size_t e, uint16_t walk) {
      double n = 0;
      for (size_t k = b; k < e; ++k) n += x[k].walk == walk;
      return n;
    };
    double m = 0;
    for (size_t a = i; a < i_end; ++a) {
      const double other = s_node - count_of(seen, j, j_end, visits[a].walk);
      out[visits[a].walk] += other;
      m += other;
    }
    for (size_t b = j; b < j_end; ++b) {
      in[seen[b].walk] += v_node - count_of(visits, i, i_end, seen[b].walk);
    }
    RP_ASSERT(m >= 0);
    matches += m;
    clump_sq += m * m;
    i = i_end;
    j = j_end;
  }
  if (matches < 1) return e;
  e.estimate = pairs / matches;
  // Two intervals, and the wider bound of each side is reported. (1) Poisson: the count
  // with the same relative variance as the clumped matches, M^2 / V.
  const double effective = matches * matches / clump_sq;
  double low = 0, high = 0;
  PoissonBounds(effective, &low, &high);
  e.low = e.estimate * effective / high;
  e.high = low > 0 ? e.estimate * effective / low : e.estimate * 1e3;
  // (2) Delete-one-walk jackknife of log N: it also sees what ties walks together (their
  // common start, regions of the graph they share), which per-node clumps miss: measured
  // at 10,000 nodes, (1) alone held the truth in 75-95% of estimates.
  double sum = 0, sum_sq = 0;
  uint32_t groups = 0;
  for (size_t w = 0; w < walks; ++w) {
    if (nv[w] + ns[w] == 0) continue;
    const double p = pairs - nv[w] * (total_s - ns[w]) - ns[w] * (total_v - nv[w]);
    const double mw = matches - out[w] - in[w];
    if (p <= 0 || mw < 1) continue;
    const double theta = std::log(p / mw);
    sum += theta;
    sum_sq += theta * theta;
    ++groups;
  }
  if (groups >= 3) {
    const double mean = sum / groups;
    const double var = std::max(0.0, sum_sq / groups - mean * mean) * (groups - 1);
    const double half = StudentT975(groups - 1) * std::sqrt(var);
    e.low = std::min(e.low, e.estimate * std::exp(-half));
    e.high = std::max(e.high, e.estimate * std::exp(half));
  }
  e.ok = true;
  return e;
}

}  // namespace ringpeer::dht
