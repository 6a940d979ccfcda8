#include "wire/message.h"

#include "flatbuffers/flatbuffers.h"

namespace ringpeer::wire {
namespace {

// Verifier limits: our tables are flat; anything deeper or wider is hostile.
constexpr flatbuffers::uoffset_t kVerifierDepthMax = 8;
constexpr flatbuffers::uoffset_t kVerifierTablesMax = 64;

bool AddrOk(const fb::Addr* a) noexcept {
  return a->family() == 4 || a->family() == 6;
}

template <typename T>
const T* VerifyRoot(const uint8_t* body, size_t size) noexcept {
  flatbuffers::Verifier verifier(body, size, kVerifierDepthMax, kVerifierTablesMax);
  if (!verifier.VerifyBuffer<T>(nullptr)) return nullptr;
  return flatbuffers::GetRoot<T>(body);
}

Verdict CheckPong(const fb::Pong* pong) noexcept {
  if (!AddrOk(pong->observed())) return Verdict::kBadField;
  // A proof is a public key and a signature together, or neither.
  if ((pong->public_key() == nullptr) != (pong->signature() == nullptr)) {
    return Verdict::kBadField;
  }
  return Verdict::kOk;
}

Verdict CheckPeers(const fb::Peers* peers) noexcept {
  const auto* list = peers->peers();
  if (list == nullptr) return Verdict::kOk;
  if (list->size() > kPeersPerMessageMax) return Verdict::kBadField;
  for (const fb::PeerEntry* e : *list) {
    if (!AddrOk(&e->addr())) return Verdict::kBadField;
  }
  return Verdict::kOk;
}

}  // namespace

Verdict CheckHeader(const uint8_t* data, size_t size, Header* out) noexcept {
  if (size < kHeaderBytes) return Verdict::kTooShort;
  if (size > kDatagramBytesMax) return Verdict::kTooLong;
  Header h = LoadHeader(data);
  if (h.magic != kMagic) return Verdict::kBadMagic;
  if (h.version != kVersion) return Verdict::kBadVersion;
  if (h.body_bytes != size - kHeaderBytes) return Verdict::kBadLength;
  if (h.reserved != 0) return Verdict::kBadReserved;
  if (h.type == 0 || h.type > kMessageTypeMax) return Verdict::kUnknownType;
  *out = h;
  return Verdict::kOk;
}

Verdict Decode(const uint8_t* data, size_t size, Message* out) noexcept {
  Header h;
  Verdict v = CheckHeader(data, size, &h);
  if (v != Verdict::kOk) return v;
  const uint8_t* body = data + kHeaderBytes;
  const size_t body_size = size - kHeaderBytes;
  const void* table = nullptr;
  switch (static_cast<MessageType>(h.type)) {
    case MessageType::kPing: {
      table = VerifyRoot<fb::Ping>(body, body_size);
      break;
    }
    case MessageType::kPong: {
      const auto* pong = VerifyRoot<fb::Pong>(body, body_size);
      if (pong != nullptr && (v = CheckPong(pong)) != Verdict::kOk) return v;
      table = pong;
      break;
    }
    case MessageType::kPeers: {
      const auto* peers = VerifyRoot<fb::Peers>(body, body_size);
      if (peers != nullptr && (v = CheckPeers(peers)) != Verdict::kOk) return v;
      table = peers;
      break;
    }
  }
  if (table == nullptr) return Verdict::kVerifyFailed;
  out->header_ = h;
  out->table_ = table;
  out->data_ = data;
  out->size_ = size;
  return Verdict::kOk;
}

}  // namespace ringpeer::wire
