// ReadEntries: the peer entries of a received list, for the overlay's handlers.
// Pure; thread-compatible. Shared by overlay_dht.cc and overlay_lookup.cc.
#pragma once

#include <cstddef>
#include <span>

#include "dht/routing_table.h"
#include "flatbuffers/flatbuffers.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace ringpeer::dht {

// ReadEntries: peer entries from the wire into `out`, without our own id or unusable
// addresses (invalid, or port 0). Returns how many were written.
inline size_t ReadEntries(const flatbuffers::Vector<const wire::fb::PeerEntry*>* list,
                   const NodeId& self, std::span<Contact> out) noexcept {
  if (list == nullptr) return 0;
  size_t n = 0;
  for (const wire::fb::PeerEntry* e : *list) {
    if (n == out.size()) break;
    Contact c{wire::FromWireId(e->id()), wire::FromWireAddr(e->addr())};
    if (c.id == self || !c.addr.valid() || c.addr.port == 0) continue;
    out[n++] = c;
  }
  return n;
}

}  // namespace ringpeer::dht
