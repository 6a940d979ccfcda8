#include "dht/size_estimate.h"

#include <algorithm>
#include <cmath>

namespace ringpeer::dht {

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
  e.estimate = mean;
  e.low = std::max(0.0, mean - 1.96 * se);
  e.high = mean + 1.96 * se;
  e.ok = true;
  return e;
}

SizeEstimate CollisionEstimate(std::vector<WalkSample>& samples) {
  SizeEstimate e;
  e.method = SizeMethod::kCollision;
  e.samples = static_cast<uint32_t>(samples.size());
  double sum_d = 0, sum_inv = 0;
  for (const WalkSample& s : samples) {
    sum_d += s.degree;
    sum_inv += 1.0 / s.degree;
  }
  std::sort(samples.begin(), samples.end(),
            [](const WalkSample& a, const WalkSample& b) { return a.node < b.node; });
  double pairs = 0;
  for (size_t i = 0; i < samples.size();) {
    size_t j = i;
    while (j < samples.size() && samples[j].node == samples[i].node) ++j;
    for (size_t a = i; a < j; ++a) {
      for (size_t b = a + 1; b < j; ++b) {
        const WalkSample& x = samples[a];
        const WalkSample& y = samples[b];
        const uint32_t gap = x.step > y.step ? x.step - y.step : y.step - x.step;
        if (x.walk == y.walk && gap < kWalkPairGap) continue;
        pairs += 1;
      }
    }
    i = j;
  }
  if (pairs < 1) return e;
  e.estimate = sum_d * sum_inv / (2 * pairs);
  // C is roughly Poisson: its 95% interval maps to the estimate's (inversely).
  const double rel = 1.96 / std::sqrt(pairs);
  e.low = e.estimate / (1 + rel);
  e.high = rel < 1 ? e.estimate / (1 - rel) : e.estimate * 1e3;
  e.ok = true;
  return e;
}

}  // namespace ringpeer::dht
