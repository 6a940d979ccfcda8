#include "dht/lookup.h"

#include <algorithm>

#include "base/assert.h"

namespace ringpeer::dht {

Lookup::Lookup(uint32_t candidates_max) {
  RP_ASSERT(candidates_max >= 8);
  RP_ASSERT(candidates_max <= 255);
  cands_.resize(candidates_max);
  order_.reserve(candidates_max);
}

void Lookup::SetToken(int c, std::span<const uint8_t, 16> token) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (kind_ != LookupKind::kAnnounce || !tokens_) return;
  cand.has_token = true;
  std::copy(token.begin(), token.end(), tokens_[static_cast<size_t>(c)].begin());
}

const Lookup::Token* Lookup::token(int c) const noexcept {
  const size_t i = static_cast<size_t>(c);
  if (!cands_[i].has_token || kind_ != LookupKind::kAnnounce || !tokens_) return nullptr;
  return &tokens_[i];
}

void Lookup::Start(const NodeId& target, LookupKind kind, const LookupParams& params,
                   std::span<const Contact> seeds) noexcept {
  RP_ASSERT(params.paths >= 1);
  RP_ASSERT(params.paths <= kPathsMax);
  RP_ASSERT(params.alpha >= 1);
  for (Candidate& c : cands_) c = Candidate{};
  // Allocated once in the slot's life, at its first announcement (as the table's buckets
  // are at its splits); out of memory here aborts, as at construction.
  if (kind == LookupKind::kAnnounce && !tokens_) tokens_ = std::make_unique<Token[]>(cands_.size());
  order_.clear();
  target_ = target;
  kind_ = kind;
  params_ = params;
  std::fill(std::begin(in_flight_), std::end(in_flight_), 0);
  next_path_ = 0;
  requests_sent_ = 0;
  replies_received_ = 0;
  // Deal seeds nearest-first round-robin, so that every path starts from good ones.
  Contact sorted[64];
  const size_t n = std::min<size_t>(seeds.size(), 64);
  std::copy(seeds.begin(), seeds.begin() + static_cast<ptrdiff_t>(n), sorted);
  std::sort(sorted, sorted + n,
            [&](const Contact& a, const Contact& b) { return CloserTo(target, a.id, b.id); });
  for (size_t i = 0; i < n; ++i) Merge(sorted[i], static_cast<uint8_t>(i % params.paths), 1);
}

void Lookup::Merge(const Contact& c, uint8_t path, uint8_t generation) noexcept {
  size_t pos = order_.size();
  for (size_t i = 0; i < order_.size(); ++i) {
    const Candidate& o = cands_[order_[i]];
    if (o.contact.id == c.id) return;  // known: owned by whichever path found it first
    if (pos == order_.size() && CloserTo(target_, c.id, o.contact.id)) pos = i;
  }
  int slot = -1;
  if (order_.size() < cands_.size()) {
    for (size_t i = 0; i < cands_.size(); ++i) {
      if (cands_[i].state == State::kFree) {
        slot = static_cast<int>(i);
        break;
      }
    }
  } else {
    // Full: give up the farthest candidate not in flight, if the newcomer is nearer.
    for (size_t i = order_.size(); i-- > pos;) {
      if (cands_[order_[i]].state != State::kInFlight) {
        slot = order_[i];
        cands_[order_[i]] = Candidate{};
        order_.erase(order_.begin() + static_cast<ptrdiff_t>(i));
        break;
      }
    }
    if (slot < 0) return;
  }
  RP_ASSERT(slot >= 0);
  Candidate& n = cands_[static_cast<size_t>(slot)];
  n = Candidate{};
  n.contact = c;
  n.state = State::kWaiting;
  n.path = path;
  n.generation = generation;
  pos = std::min(pos, order_.size());
  order_.insert(order_.begin() + static_cast<ptrdiff_t>(pos), static_cast<uint8_t>(slot));
}

int Lookup::NextOnPath(uint8_t path) const noexcept {
  // The nearest unqueried candidate among the path's result_size nearest live ones.
  uint32_t seen = 0;
  for (uint8_t idx : order_) {
    const Candidate& c = cands_[idx];
    if (c.path != path || c.state == State::kFailed) continue;
    if (c.state == State::kWaiting) return idx;
    if (++seen >= params_.result_size) break;
  }
  return -1;
}

bool Lookup::PathDone(uint8_t path) const noexcept {
  return in_flight_[path] == 0 && NextOnPath(path) < 0;
}

int Lookup::Next() noexcept {
  for (uint8_t k = 0; k < params_.paths; ++k) {
    const uint8_t p = static_cast<uint8_t>((next_path_ + k) % params_.paths);
    if (in_flight_[p] >= params_.alpha) continue;
    const int c = NextOnPath(p);
    if (c < 0) continue;
    next_path_ = static_cast<uint8_t>((p + 1) % params_.paths);
    Candidate& cand = cands_[static_cast<size_t>(c)];
    cand.state = State::kInFlight;
    cand.attempts = 1;
    ++in_flight_[p];
    ++requests_sent_;
    return c;
  }
  return -1;
}

void Lookup::OnReply(int c, std::span<const Contact> nodes) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (cand.state != State::kInFlight) return;
  cand.state = State::kAnswered;
  RP_ASSERT(in_flight_[cand.path] > 0);
  --in_flight_[cand.path];
  ++replies_received_;
  const uint8_t gen = static_cast<uint8_t>(std::min(cand.generation + 1, 255));
  const uint8_t path = cand.path;
  for (const Contact& n : nodes) Merge(n, path, gen);
}

bool Lookup::OnTimeout(int c) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (cand.state != State::kInFlight) return false;
  const uint8_t tries_max = RankOnPath(c) < params_.nearest_count
                                ? std::max(params_.attempts_max, params_.attempts_nearest_max)
                                : params_.attempts_max;
  if (cand.attempts < tries_max) {
    ++cand.attempts;
    ++requests_sent_;
    return true;
  }
  Abandon(c);
  return false;
}

uint32_t Lookup::RankOnPath(int c) const noexcept {
  const Candidate& cand = cands_[static_cast<size_t>(c)];
  uint32_t rank = 0;
  for (uint8_t idx : order_) {
    if (idx == c) return rank;
    const Candidate& o = cands_[idx];
    if (o.path == cand.path && o.state != State::kFailed) ++rank;
  }
  RP_DASSERT(false);  // every candidate in use is in order_
  return rank;
}

void Lookup::Abandon(int c) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (cand.state != State::kInFlight) return;
  cand.state = State::kFailed;
  RP_ASSERT(in_flight_[cand.path] > 0);
  --in_flight_[cand.path];
}

bool Lookup::Done() const noexcept {
  for (uint8_t p = 0; p < params_.paths; ++p) {
    if (!PathDone(p)) return false;
  }
  return true;
}

size_t Lookup::ResultIndices(std::span<int> out) const noexcept {
  size_t n = 0;
  const size_t cap = std::min<size_t>(out.size(), params_.result_size);
  for (uint8_t idx : order_) {
    if (n == cap) break;
    if (cands_[idx].state == State::kAnswered) out[n++] = idx;
  }
  return n;
}

size_t Lookup::Results(std::span<Contact> out) const noexcept {
  int idx[255];
  const size_t n = ResultIndices(std::span(idx, std::min<size_t>(out.size(), 255)));
  for (size_t i = 0; i < n; ++i) out[i] = cands_[static_cast<size_t>(idx[i])].contact;
  return n;
}

uint8_t Lookup::rounds() const noexcept {
  for (uint8_t idx : order_) {
    if (cands_[idx].state == State::kAnswered) return cands_[idx].generation;
  }
  return 0;
}

}  // namespace ringpeer::dht
