#include "dht/snapshot.h"

#include <algorithm>

#include "base/assert.h"

namespace ringpeer::dht {

namespace {

// Bit(id, i): bit i of id, most significant first.
inline int Bit(const NodeId& id, int i) noexcept { return (id[i / 8] >> (7 - i % 8)) & 1; }

// InsertClosest: the up-to-out.size() entries of `in` nearest `target`, nearest first.
size_t InsertClosest(const NodeId& target, std::span<const Contact> in,
                     std::span<Contact> out) noexcept {
  size_t n = 0;
  for (const Contact& c : in) {
    if (n == out.size() && !CloserTo(target, c.id, out[n - 1].id)) continue;
    size_t j = n < out.size() ? n++ : n - 1;
    while (j > 0 && CloserTo(target, c.id, out[j - 1].id)) {
      out[j] = out[j - 1];
      --j;
    }
    out[j] = c;
  }
  return n;
}

}  // namespace

size_t TableSnapshot::Closest(const NodeId& target, std::span<Contact> out) const noexcept {
  // An empty span wants nothing (and would make the first entry index out[n - 1] below).
  if (out.empty()) return 0;
  std::span<const Contact> range(entries_);
  if (sealed_) {
    // Sorted by id, the entries sharing at least L leading bits with the target are one
    // contiguous range, and every one of them is nearer than any entry outside it. So
    // narrow the range bit by bit while it still holds out.size() entries; the nearest
    // are all inside the last such range (O(log n) per bit where entries differ; bits all
    // of them share are skipped at once).
    int bit = 0;
    while (range.size() > out.size() && bit < 256) {
      const int shared = CommonPrefixBits(range.front().id, range.back().id);
      if (shared > bit) {
        if (CommonPrefixBits(range.front().id, target) < shared) break;  // they all diverge
        bit = shared;                                                   // from it equally
        continue;
      }
      // Entries with a 0 at `bit` come first.
      const auto split = std::partition_point(range.begin(), range.end(), [&](const Contact& c) {
        return Bit(c.id, bit) == 0;
      });
      const size_t zeros = static_cast<size_t>(split - range.begin());
      std::span<const Contact> half =
          Bit(target, bit) == 0 ? range.first(zeros) : range.subspan(zeros);
      if (half.size() < out.size()) break;
      range = half;
      ++bit;
    }
  }
  return InsertClosest(target, range, out);
}

void TableSnapshot::Seal() noexcept {
  std::sort(entries_.begin(), entries_.end(),
            [](const Contact& a, const Contact& b) { return a.id < b.id; });
  sealed_ = true;
}

const Contact* TableSnapshot::Find(const NodeId& id) const noexcept {
  if (sealed_) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), id,
                               [](const Contact& c, const NodeId& v) { return c.id < v; });
    return it != entries_.end() && it->id == id ? &*it : nullptr;
  }
  for (const Contact& c : entries_) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

bool TableSnapshot::Contains(const NodeId& id, const base::Endpoint& addr) const noexcept {
  const Contact* c = Find(id);
  return c != nullptr && c->addr == addr;
}

bool TableSnapshot::HoldsId(const NodeId& id) const noexcept { return Find(id) != nullptr; }

bool TableSnapshot::RandomContact(base::Rng& rng, Contact* out) const noexcept {
  if (entries_.empty()) return false;
  *out = entries_[rng.Uniform(entries_.size())];
  return true;
}

wire::Verdict AnswerFindNode(const NodeId& self, const base::Endpoint& from,
                             const wire::Message& msg, std::span<const Contact> closest,
                             bool round_tripped, wire::Encoder& encoder, base::Outbox& out,
                             bool* trimmed) noexcept {
  const wire::fb::FindNode* req = msg.find_node();
  const uint32_t hint = static_cast<uint32_t>(req->txid() & 0xFF);
  wire::PeerInfo list[wire::kNodesPerMessageMax];
  size_t n = std::min<size_t>({closest.size(), req->count(), wire::kNodesPerMessageMax});
  for (size_t i = 0; i < n; ++i) list[i] = wire::PeerInfo{closest[i].id, closest[i].addr};
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return wire::Verdict::kSendQueueFull;
  const size_t limit = round_tripped ? buf.size() : kAmplificationMax * msg.bytes().size();
  size_t bytes = encoder.Nodes(buf, hint, req->txid(), self, std::span(list, n));
  RP_ASSERT(bytes > 0);
  *trimmed = false;
  // Drop entries until the answer fits the amplification limit (52 bytes per entry, plus
  // a little slack for alignment, so this loops at most twice).
  while (bytes > limit && n > 0) {
    const size_t excess = (bytes - limit + kPeerEntryBytes - 1) / kPeerEntryBytes;
    n = excess >= n ? 0 : n - excess;
    bytes = encoder.Nodes(buf, hint, req->txid(), self, std::span(list, n));
    *trimmed = true;
  }
  if (bytes > limit) return wire::Verdict::kOk;  // not even an empty answer fits: say nothing
  out.Commit(bytes, from);
  return wire::Verdict::kOk;
}

wire::Verdict AnswerProviders(const NodeId& self, const base::Endpoint& from,
                              const wire::Message& msg, std::span<const Contact> providers,
                              std::span<const Contact> near, const Token& token,
                              bool round_tripped, wire::Encoder& encoder, base::Outbox& out,
                              bool* trimmed) noexcept {
  const wire::fb::GetProviders* req = msg.get_providers();
  wire::PeerInfo pi[wire::kProvidersPerMessageMax], ni[wire::kProviderNodesPerMessageMax];
  size_t np = std::min(providers.size(), std::size(pi));
  size_t nn = std::min(near.size(), std::size(ni));
  for (size_t i = 0; i < np; ++i) pi[i] = wire::PeerInfo{providers[i].id, providers[i].addr};
  for (size_t i = 0; i < nn; ++i) ni[i] = wire::PeerInfo{near[i].id, near[i].addr};
  *trimmed = false;
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return wire::Verdict::kSendQueueFull;
  const size_t limit = round_tripped ? buf.size() : kAmplificationMax * msg.bytes().size();
  const uint32_t hint = static_cast<uint32_t>(req->txid() & 0xFF);
  size_t bytes = 0;
  for (;;) {
    bytes = encoder.Providers(buf, hint, req->txid(), self, token, std::span(pi, np),
                              std::span(ni, nn));
    RP_ASSERT(bytes > 0);
    if (bytes <= limit || (nn == 0 && np == 0)) break;
    nn > 0 ? --nn : --np;
    *trimmed = true;
  }
  if (bytes > limit) return wire::Verdict::kOk;
  out.Commit(bytes, from);
  return wire::Verdict::kOk;
}

wire::Verdict AnswerWalk(const NodeId& self, const base::Endpoint& from,
                         const wire::Message& msg, std::span<const wire::PeerInfo> next,
                         uint16_t degree, bool held, bool round_tripped,
                         wire::Encoder& encoder, base::Outbox& out, bool* trimmed) noexcept {
  const wire::fb::Walk* w = msg.walk();
  *trimmed = false;
  std::span<uint8_t> buf = out.Buffer();
  if (buf.empty()) return wire::Verdict::kSendQueueFull;
  const size_t limit = round_tripped ? buf.size() : kAmplificationMax * msg.bytes().size();
  size_t n = next.size();
  size_t bytes = 0;
  // A stranger's small request gets fewer proposals rather than none (never above 3x).
  for (;;) {
    bytes = encoder.WalkReply(buf, static_cast<uint32_t>(w->txid() & 0xFF), w->txid(), self,
                              degree, next.first(n), held);
    RP_ASSERT(bytes > 0);
    if (bytes <= limit || n == 0) break;
    --n;
  }
  if (bytes > limit) {
    *trimmed = true;
    return wire::Verdict::kOk;
  }
  out.Commit(bytes, from);
  return wire::Verdict::kOk;
}

wire::Verdict SnapshotResponder::Answer(const base::Endpoint& from, const wire::Message& msg,
                                        const TableSnapshot& snapshot, bool proven,
                                        base::Outbox& out) noexcept {
  Contact closest[wire::kNodesPerMessageMax];
  const size_t n = snapshot.Closest(wire::FromWireId(*msg.find_node()->target()), closest);
  bool trimmed = false;
  const bool rt =
      proven || snapshot.Contains(wire::FromWireId(*msg.find_node()->sender()), from);
  return AnswerFindNode(self_, from, msg, std::span(closest, n), rt, encoder_, out, &trimmed);
}

wire::Verdict SnapshotResponder::AnswerGetProviders(int64_t now_us, const base::Endpoint& from,
                                                    const wire::Message& msg,
                                                    const DhtSnapshot& snapshot, bool proven,
                                                    base::Outbox& out) noexcept {
  const wire::fb::GetProviders* req = msg.get_providers();
  const NodeId key = wire::FromWireId(*req->key());
  Contact prov[wire::kProvidersPerMessageMax];
  Contact near[wire::kProviderNodesPerMessageMax];
  const size_t np = snapshot.providers.Get(
      key, now_us, std::span(prov, std::min<size_t>(req->count(), std::size(prov))));
  const size_t nn = snapshot.table.Closest(key, near);
  const bool rt = proven || snapshot.table.Contains(wire::FromWireId(*req->sender()), from);
  bool trimmed = false;
  return AnswerProviders(self_, from, msg, std::span(prov, np), std::span(near, nn),
                         snapshot.tokens.Make(from), rt, encoder_, out, &trimmed);
}

wire::Verdict SnapshotResponder::AnswerWalk(const base::Endpoint& from, const wire::Message& msg,
                                            const TableSnapshot& snapshot, bool proven,
                                            base::Rng& rng, base::Outbox& out) noexcept {
  const wire::fb::Walk* w = msg.walk();
  wire::PeerInfo next[wire::kWalkNextMax];
  size_t n = 0;
  Contact c;
  for (size_t k = 0; k < std::size(next); ++k) {
    if (snapshot.RandomContact(rng, &c)) next[n++] = wire::PeerInfo{c.id, c.addr};
  }
  const bool held = w->prev() != nullptr && snapshot.HoldsId(wire::FromWireId(*w->prev()));
  const uint16_t degree =
      static_cast<uint16_t>(std::min<size_t>(snapshot.entries().size(), 0xFFFF));
  const bool rt = proven || snapshot.Contains(wire::FromWireId(*w->sender()), from);
  bool trimmed = false;
  return dht::AnswerWalk(self_, from, msg, std::span(next, n), degree, held, rt, encoder_, out,
                         &trimmed);
}

}  // namespace ringpeer::dht
