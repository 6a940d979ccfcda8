#include "dht/snapshot.h"

#include <algorithm>

#include "base/assert.h"

namespace ringpeer::dht {

size_t TableSnapshot::Closest(const NodeId& target, std::span<Contact> out) const noexcept {
  // An empty span wants nothing (and would make the first entry index out[n - 1] below).
  if (out.empty()) return 0;
  size_t n = 0;
  for (const Contact& c : entries_) {
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

bool TableSnapshot::Contains(const NodeId& id, const base::Endpoint& addr) const noexcept {
  for (const Contact& c : entries_) {
    if (c.id == id && c.addr == addr) return true;
  }
  return false;
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

wire::Verdict SnapshotResponder::Answer(const base::Endpoint& from, const wire::Message& msg,
                                        const TableSnapshot& snapshot, base::Outbox& out) noexcept {
  Contact closest[wire::kNodesPerMessageMax];
  const size_t n = snapshot.Closest(wire::FromWireId(*msg.find_node()->target()), closest);
  bool trimmed = false;
  const bool rt = snapshot.Contains(wire::FromWireId(*msg.find_node()->sender()), from);
  return AnswerFindNode(self_, from, msg, std::span(closest, n), rt, encoder_, out, &trimmed);
}

}  // namespace ringpeer::dht
