#include "dht/lookup.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/assert.h"

namespace ringpeer::dht {
namespace {

// LogDistance: 8 x log2 of the distance between a and b, from its first 64 bits (1 for
// ids closer than that resolves): a ratio of 2 is a difference of 8.
uint16_t LogDistance(const NodeId& a, const NodeId& b) noexcept {
  uint64_t d = 0;
  for (size_t i = 0; i < 8; ++i) d = d << 8 | static_cast<uint8_t>(a[i] ^ b[i]);
  if (d == 0) return 1;
  const int top = 63 - __builtin_clzll(d);
  const uint64_t frac = top >= 3 ? (d >> (top - 3)) & 7 : (d << (3 - top)) & 7;
  return static_cast<uint16_t>(8 * top + frac + 1);
}

}  // namespace

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
  std::fill(std::begin(retrying_), std::end(retrying_), 0);
  next_path_ = 0;
  liars_ = 0;
  silent_ = 0;
  requests_sent_ = 0;
  replies_received_ = 0;
  // Deal seeds nearest-first round-robin, so that every path starts from good ones.
  Contact sorted[64];
  const size_t n = std::min<size_t>(seeds.size(), 64);
  std::copy(seeds.begin(), seeds.begin() + static_cast<ptrdiff_t>(n), sorted);
  std::sort(sorted, sorted + n,
            [&](const Contact& a, const Contact& b) { return CloserTo(target, a.id, b.id); });
  for (size_t i = 0; i < n; ++i) {
    Merge(sorted[i], static_cast<uint8_t>(i % params.paths), 1, kNoSource);
  }
}

bool Lookup::Merge(const Contact& c, uint8_t path, uint8_t generation, uint8_t source) noexcept {
  size_t pos = order_.size();
  for (size_t i = 0; i < order_.size(); ++i) {
    const Candidate& o = cands_[order_[i]];
    if (o.contact.id == c.id) {  // known: owned by the path that found it first
      if (cands_[order_[i]].vouches < 255) ++cands_[order_[i]].vouches;
      return false;
    }
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
    // Full: give up the farthest failed candidate, wherever it is (made-up ids sit nearer
    // the target than any real node, and once they failed they must not keep real ones
    // out), else the farthest candidate not in flight, if the newcomer is nearer. The
    // Window() nearest trusted answers are never given up for an unchecked name: a reply
    // of made-up ids would otherwise push out everything that answered.
    size_t victim = order_.size();
    for (size_t i = order_.size(); i-- > 0 && victim == order_.size();) {
      if (cands_[order_[i]].state == State::kFailed) victim = i;
    }
    if (victim == order_.size()) {
      uint32_t kept = 0;  // trusted answers nearer than order_[i], and order_[i] itself
      size_t keep_end = 0;
      for (size_t i = 0; i < order_.size() && kept < Window(); ++i) {
        const Candidate& o = cands_[order_[i]];
        kept += o.state == State::kAnswered && !o.distrusted;
        keep_end = i + 1;
      }
      for (size_t i = order_.size(); i-- > pos && victim == order_.size();) {
        const Candidate& o = cands_[order_[i]];
        if (o.state == State::kInFlight) continue;
        if (o.state == State::kAnswered && !o.distrusted && i < keep_end) continue;
        victim = i;
      }
    }
    if (victim == order_.size()) return false;
    slot = order_[victim];
    cands_[static_cast<size_t>(slot)] = Candidate{};
    order_.erase(order_.begin() + static_cast<ptrdiff_t>(victim));
    if (victim < pos) --pos;
    // Names it gave lose their source: the slot is about to be someone else.
    for (uint8_t idx : order_) {
      if (cands_[idx].source == slot) cands_[idx].source = kNoSource;
    }
  }
  RP_ASSERT(slot >= 0);
  Candidate& n = cands_[static_cast<size_t>(slot)];
  n = Candidate{};
  n.contact = c;
  n.state = State::kWaiting;
  n.path = path;
  n.generation = generation;
  n.source = source;
  pos = std::min(pos, order_.size());
  order_.insert(order_.begin() + static_cast<ptrdiff_t>(pos), static_cast<uint8_t>(slot));
  return true;
}

int Lookup::NextOnPath(uint8_t path) const noexcept {
  // The nearest unqueried candidate among the path's result_size nearest live ones.
  uint32_t seen = 0;
  for (uint8_t idx : order_) {
    const Candidate& c = cands_[idx];
    if (c.path != path || !Counts(c)) continue;
    if (c.state == State::kWaiting || c.requery) return idx;
    if (++seen >= Window()) break;
  }
  return -1;
}

bool Lookup::PathDone(uint8_t path) const noexcept {
  return in_flight_[path] == 0 && retrying_[path] == 0 && (OutOfRequests() || NextOnPath(path) < 0);
}

int Lookup::Next() noexcept {
  if (OutOfRequests()) return -1;
  for (uint8_t k = 0; k < params_.paths; ++k) {
    const uint8_t p = static_cast<uint8_t>((next_path_ + k) % params_.paths);
    if (in_flight_[p] >= params_.alpha) continue;
    const int c = NextOnPath(p);
    if (c < 0) continue;
    next_path_ = static_cast<uint8_t>((p + 1) % params_.paths);
    Candidate& cand = cands_[static_cast<size_t>(c)];
    cand.state = State::kInFlight;
    cand.requeried |= cand.requery;
    cand.requery = false;
    cand.attempts = 1;
    cand.beside = false;
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
  Land(cand);
  ++replies_received_;
  if (cand.struck) {
    // Late, not made up: the strike it cost its source is taken back (a source already
    // distrusted stays so; Distrust is not undone).
    cand.struck = false;
    if (cand.source != kNoSource && cands_[cand.source].strikes > 0 &&
        cands_[cand.source].state != State::kFree) {
      --cands_[cand.source].strikes;
    }
  }
  const uint8_t gen = static_cast<uint8_t>(std::min(cand.generation + 1, 255));
  const uint8_t path = cand.path;
  // Nearest first, so that a capped answer keeps its best names.
  Contact sorted[64];
  const size_t n = std::min<size_t>(nodes.size(), std::size(sorted));
  std::copy(nodes.begin(), nodes.begin() + static_cast<ptrdiff_t>(n), sorted);
  std::sort(sorted, sorted + n,
            [&](const Contact& a, const Contact& b) { return CloserTo(target_, a.id, b.id); });
  if (n > 0) cand.far_log = LogDistance(target_, sorted[n - 1].id);
  uint32_t added = 0;
  for (size_t i = 0; i < n; ++i) {
    if (params_.names_per_reply_max != 0 && added >= params_.names_per_reply_max) break;
    added += Merge(sorted[i], path, gen, static_cast<uint8_t>(c));
  }
  Audit();
}

bool Lookup::OnTimeout(int c) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (cand.state != State::kInFlight) return false;
  const bool vouched = cand.source == kNoSource || cand.vouches >= 2;
  const bool suspect = cand.source != kNoSource && cands_[cand.source].strikes > 0;
  uint8_t tries_max = vouched && RankOnPath(c) < params_.nearest_count
                          ? std::max(params_.attempts_max, params_.attempts_nearest_max)
                          : params_.attempts_max;
  if (suspect && !vouched) tries_max = 1;
  // An unvouched name silent twice counts against its source now, not after its last try:
  // a liar's made-up ids each took 3 s to strike it, and lookups among liars ran out of time.
  // At 5% loss an honest name is silent twice in about one case in a hundred, and its
  // answer takes the strike back (OnReply); two strikes are needed to distrust.
  if (!vouched && !cand.struck && !cand.requeried && cand.attempts >= kTriesHoldingSlot &&
      params_.early_strike) {
    cand.struck = true;
    Strike(cand.source);
  }
  if (cand.attempts < tries_max && !OutOfRequests()) {
    if (cand.attempts == kTriesHoldingSlot && params_.retry_frees_slot && !cand.beside) {
      // Silent twice: its further tries go on beside the next request, not instead of it
      // (a node that drops every request would hold an alpha slot for all its 3-5 tries).
      // Twice, not once: at 5% loss one try in ten times out, and a slot freed then sends
      // a request an honest lookup would often not have needed.
      MoveBeside(cand);
    }
    ++cand.attempts;
    ++requests_sent_;
    return true;
  }
  // Among the nearest that must answer (ranked before it leaves them): a silent honest
  // node, or a dropper; either way one fewer of the k nearest will answer (silent_extra).
  const bool near = params_.silent_extra != 0 && !cand.requeried && RankOnPath(c) < Window();
  Abandon(c);
  if (cand.requeried) {
    cand.state = State::kAnswered;  // it answered once: that answer stands
    return false;
  }
  if (near) CountSilent(cand.contact.id);
  // A silent node that two answers named is real and merely silent (a node that drops
  // requests is in honest tables too); only a name one answer alone gave is a strike.
  if (cand.vouches < 2 && !cand.struck) Strike(cand.source);
  return false;
}

void Lookup::Strike(uint8_t source) noexcept {
  if (source == kNoSource || params_.strikes_max == 0) return;
  Candidate& s = cands_[source];
  if (s.state == State::kFree) return;
  if (s.strikes < 255) ++s.strikes;
  if (s.distrusted || s.strikes < params_.strikes_max) return;
  Distrust(source);
}

void Lookup::CountSilent(const NodeId& id) noexcept {
  uint64_t key;
  std::memcpy(&key, id.data(), sizeof key);
  const size_t kept = std::min<size_t>(silent_, kSilentKept);
  for (size_t i = 0; i < kept; ++i) {
    if (silent_ids_[i] == key) return;  // evicted, named again, silent again: counted
  }
  if (silent_ < kSilentKept) silent_ids_[silent_] = key;
  if (silent_ < 255) ++silent_;
}

uint32_t Lookup::Window() const noexcept {
  if (kind_ == LookupKind::kSizeSample) return params_.result_size;
  const uint32_t extra = std::min<uint32_t>(
      uint32_t{liars_} * params_.liar_extra + uint32_t{silent_} * params_.silent_extra,
      params_.liar_extra_max);
  return std::min<uint32_t>(params_.result_size + extra, static_cast<uint32_t>(cands_.size()));
}

void Lookup::Distrust(uint8_t c) noexcept {
  cands_[c].distrusted = true;
  if (liars_ < 255) ++liars_;
  // What only it named and nobody asked yet is dropped; what is in flight answers or not
  // on its own merits (a liar's name that answers is a real node).
  for (uint8_t idx : order_) {
    Candidate& o = cands_[idx];
    if (o.source == c && o.state == State::kWaiting) o.state = State::kFailed;
  }
  uint32_t again = 0;
  for (uint8_t idx : order_) {
    if (again == params_.alpha) break;
    Candidate& o = cands_[idx];
    if (o.path != cands_[c].path || o.state != State::kAnswered || o.distrusted) continue;
    if (o.requeried || o.requery) continue;
    o.requery = true;
    ++again;
  }
}

void Lookup::Audit() noexcept {
  // Only the caller's lookups: refreshes and size samples read every answer for the table
  // or the density, and there the audit cost honest names (a gossip flood then missed
  // nodes whose entries a refresh had dropped).
  if (params_.audit_factor == 0 || kind_ == LookupKind::kRefresh ||
      kind_ == LookupKind::kSizeSample) {
    return;
  }
  // The result_size nearest trusted answers that named anyone, and their median reach.
  uint8_t near[255];
  uint16_t reach[255];
  size_t n = 0;
  for (uint8_t idx : order_) {
    if (n == params_.result_size) break;
    const Candidate& o = cands_[idx];
    if (o.state != State::kAnswered || o.distrusted || o.far_log == 0) continue;
    near[n] = idx;
    reach[n++] = o.far_log;
  }
  if (n < params_.result_size / 2u || n < 4) return;  // too few answers to call one odd
  std::nth_element(reach, reach + n / 2, reach + n);
  const uint16_t median = reach[n / 2];
  // log2(factor) in eighths, rounded down: 6 -> 20 (a ratio of 5.66).
  const uint16_t margin =
      static_cast<uint16_t>(8 * std::log2(static_cast<double>(params_.audit_factor)));
  for (size_t i = 0; i < n; ++i) {
    // A responder far from the target names nodes far from it too; only one that names
    // nodes farther than both itself and its neighbours' names is odd.
    const Candidate& o = cands_[near[i]];
    const uint16_t base = std::max(median, LogDistance(target_, o.contact.id));
    if (o.far_log > base + margin) Distrust(near[i]);
  }
}

uint32_t Lookup::RankOnPath(int c) const noexcept {
  const Candidate& cand = cands_[static_cast<size_t>(c)];
  uint32_t rank = 0;
  for (uint8_t idx : order_) {
    if (idx == c) return rank;
    const Candidate& o = cands_[idx];
    if (o.path == cand.path && Counts(o)) ++rank;
  }
  RP_DASSERT(false);  // every candidate in use is in order_
  return rank;
}

void Lookup::Abandon(int c) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (cand.state != State::kInFlight) return;
  cand.state = State::kFailed;
  Land(cand);
}

bool Lookup::OnSlow(int c) noexcept {
  Candidate& cand = cands_[static_cast<size_t>(c)];
  if (!params_.slow_frees_slot || cand.state != State::kInFlight || cand.beside ||
      cand.attempts != 1 || retrying_[cand.path] >= params_.alpha) {
    return false;
  }
  MoveBeside(cand);
  return true;
}

void Lookup::MoveBeside(Candidate& cand) noexcept {
  RP_ASSERT(in_flight_[cand.path] > 0);
  --in_flight_[cand.path];
  ++retrying_[cand.path];
  cand.beside = true;
}

void Lookup::Land(Candidate& cand) noexcept {
  if (cand.beside) {
    RP_ASSERT(retrying_[cand.path] > 0);
    --retrying_[cand.path];
    cand.beside = false;
  } else {
    RP_ASSERT(in_flight_[cand.path] > 0);
    --in_flight_[cand.path];
  }
}

bool Lookup::Done() const noexcept {
  for (uint8_t p = 0; p < params_.paths; ++p) {
    if (!PathDone(p)) return false;
  }
  return true;
}

size_t Lookup::ResultIndices(std::span<int> out) const noexcept {
  size_t n = 0;
  const size_t cap = std::min<size_t>(out.size(), Window());
  for (uint8_t idx : order_) {
    if (n == cap) break;
    if (cands_[idx].state == State::kAnswered && !cands_[idx].distrusted) out[n++] = idx;
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
    if (cands_[idx].state == State::kAnswered && !cands_[idx].distrusted) {
      return cands_[idx].generation;
    }
  }
  return 0;
}

}  // namespace ringpeer::dht
