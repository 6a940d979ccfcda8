#include "node/room/records.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "base/huge_pages.h"
#include "flatbuffers/flatbuffers.h"

namespace ringpeer::room {
namespace {

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32);
static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == kAeadTagBytes);
static_assert(crypto_box_SEALBYTES == 48);

// Verifier limits: room bodies are flat tables; anything deeper or wider is hostile.
constexpr flatbuffers::uoffset_t kVerifierDepthMax = 8;
constexpr flatbuffers::uoffset_t kVerifierTablesMax = 2 * kMembersMax + 16;
constexpr size_t kGrantPlainBytesMax = 64;  // content key ‖ write seed

// Envelope: wraps signed body bytes. The body vector is 8-aligned so that the nested
// FlatBuffer's scalars are aligned wherever the record is stored 8-aligned.
std::vector<uint8_t> Envelope(Bytes body, const wire::SecretKey& key) {
  Signature sig = wire::Sign(key, body);
  flatbuffers::FlatBufferBuilder fbb(body.size() + 128);
  fbb.ForceVectorAlignment(body.size(), 1, 8);
  auto body_off = fbb.CreateVector(body.data(), body.size());
  fb::Sig512 s;
  std::memcpy(s.mutable_b()->Data(), sig.data(), sig.size());
  fbb.Finish(fb::CreateSigned(fbb, body_off, &s));
  const uint8_t* p = fbb.GetBufferPointer();
  return std::vector<uint8_t>(p, p + fbb.GetSize());
}

// OpenEnvelope: verifies the envelope and the body as a `Body` of `kind`.
template <typename Body>
Verdict OpenEnvelope(Bytes record, fb::RecordKind kind, const Body** body, Bytes* signed_bytes,
                     Signature* sig) noexcept {
  flatbuffers::Verifier outer(record.data(), record.size(), kVerifierDepthMax, 4);
  if (!outer.VerifyBuffer<fb::Signed>(nullptr)) return Verdict::kVerifyFailed;
  const auto* env = flatbuffers::GetRoot<fb::Signed>(record.data());
  const auto* b = env->body();
  flatbuffers::Verifier inner(b->data(), b->size(), kVerifierDepthMax, kVerifierTablesMax);
  if (!inner.VerifyBuffer<Body>(nullptr)) return Verdict::kVerifyFailed;
  const Body* table = flatbuffers::GetRoot<Body>(b->data());
  if (table->kind() != kind) return Verdict::kBadField;
  *body = table;
  *signed_bytes = Bytes(b->data(), b->size());
  std::memcpy(sig->data(), env->signature()->b()->Data(), sig->size());
  return Verdict::kOk;
}

template <typename Vec>
std::vector<Hash256> KeysOf(const Vec* v) {
  std::vector<Hash256> out;
  if (v == nullptr) return out;
  out.reserve(v->size());
  for (const fb::Key256* k : *v) out.push_back(FromKey(*k));
  return out;
}

std::vector<fb::Key256> ToKeys(std::span<const Hash256> ids) {
  std::vector<fb::Key256> out;
  out.reserve(ids.size());
  for (const Hash256& h : ids) out.push_back(ToKey(h));
  return out;
}

fb::Nonce192 ToNonce(const Nonce& n) noexcept {
  fb::Nonce192 w;
  std::memcpy(w.mutable_b()->Data(), n.data(), n.size());
  return w;
}

Nonce FromNonce(const fb::Nonce192& n) noexcept {
  Nonce out;
  std::memcpy(out.data(), n.b()->Data(), out.size());
  return out;
}

// SealGrant: content key [‖ write seed] sealed to the member's converted X25519 key.
std::vector<uint8_t> SealGrant(const PublicKey& member, const KeyEpochSpec& spec, bool write) {
  uint8_t x_pk[crypto_box_PUBLICKEYBYTES];
  RP_ASSERT(crypto_sign_ed25519_pk_to_curve25519(x_pk, member.data()) == 0);
  uint8_t plain[kGrantPlainBytesMax];
  std::memcpy(plain, spec.content_key.data(), 32);
  size_t plain_bytes = 32;
  if (write) {
    std::memcpy(plain + 32, spec.write_seed.data(), 32);
    plain_bytes = 64;
  }
  std::vector<uint8_t> sealed(plain_bytes + crypto_box_SEALBYTES);
  crypto_box_seal(sealed.data(), plain, plain_bytes, x_pk);
  sodium_memzero(plain, sizeof(plain));
  return sealed;
}

// OpenGrant: finds and opens the grant sealed to `me`. False when there is none or it
// does not open (a grant that fails to open is treated as absent).
bool OpenGrant(const fb::KeyEpochBody* body, const KeyPair& me, KeyEpoch* out) {
  if (body->grants() == nullptr) return false;
  for (const fb::MemberGrant* g : *body->grants()) {
    if (std::memcmp(g->member()->b()->Data(), me.public_key.data(), 32) != 0) continue;
    const auto* sealed = g->sealed();
    if (sealed->size() < crypto_box_SEALBYTES) return false;
    const size_t plain_bytes = sealed->size() - crypto_box_SEALBYTES;
    if (plain_bytes != 32 && plain_bytes != 64) return false;
    uint8_t x_pk[32], x_sk[32], plain[kGrantPlainBytesMax];
    if (crypto_sign_ed25519_pk_to_curve25519(x_pk, me.public_key.data()) != 0) return false;
    if (crypto_sign_ed25519_sk_to_curve25519(x_sk, me.secret_key.data()) != 0) return false;
    const bool ok = crypto_box_seal_open(plain, sealed->data(), sealed->size(), x_pk, x_sk) == 0;
    sodium_memzero(x_sk, sizeof(x_sk));
    if (!ok) return false;
    ContentKey ck;
    std::memcpy(ck.data(), plain, 32);
    out->content_key = ck;
    if (plain_bytes == 64) {
      WriteSeed ws;
      std::memcpy(ws.data(), plain + 32, 32);
      out->write_seed = ws;
    }
    sodium_memzero(plain, sizeof(plain));
    return true;
  }
  return false;
}

}  // namespace

fb::Key256 ToKey(const Hash256& k) noexcept {
  fb::Key256 w;
  std::memcpy(w.mutable_b()->Data(), k.data(), 32);
  return w;
}

Hash256 FromKey(const fb::Key256& k) noexcept {
  Hash256 h;
  std::memcpy(h.data(), k.b()->Data(), 32);
  return h;
}

// ---- genesis ----

std::vector<uint8_t> MakeGenesis(const KeyPair& admin, std::string_view name,
                                 ReducerKind reducer, uint64_t state_bytes_max,
                                 const Hash256& salt) {
  flatbuffers::FlatBufferBuilder fbb(256);
  fb::Key256 a = ToKey(admin.public_key);
  fb::Key256 s = ToKey(salt);
  auto name_off = fbb.CreateString(name.data(), name.size());
  fbb.Finish(fb::CreateGenesisBody(fbb, fb::RecordKind::Genesis, &a, name_off,
                                   static_cast<uint8_t>(reducer), state_bytes_max, &s));
  return Envelope(Bytes(fbb.GetBufferPointer(), fbb.GetSize()), admin.secret_key);
}

Verdict ParseGenesis(Bytes record, Genesis* out) {
  if (record.size() > 4096) return Verdict::kTooLong;
  const fb::GenesisBody* body = nullptr;
  Bytes signed_bytes;
  Signature sig;
  Verdict v = OpenEnvelope(record, fb::RecordKind::Genesis, &body, &signed_bytes, &sig);
  if (v != Verdict::kOk) return v;
  const uint8_t kind = body->reducer();
  if (kind < 1 || kind > 3) return Verdict::kBadField;
  if (body->state_bytes_max() == 0) return Verdict::kBadField;
  PublicKey admin = FromKey(*body->admin());
  if (!wire::VerifySignature(admin, signed_bytes, sig)) return Verdict::kBadSignature;
  out->room_id = wire::Blake2b256(signed_bytes);
  out->admin = admin;
  out->name = body->name()->str();
  out->reducer = static_cast<ReducerKind>(kind);
  out->state_bytes_max = body->state_bytes_max();
  return Verdict::kOk;
}

// ---- key epochs ----

std::vector<uint8_t> MakeKeyEpoch(const KeyPair& admin, const KeyEpochSpec& spec,
                                  RandomFn random) {
  RP_ASSERT(spec.members.size() <= kMembersMax);
  RP_ASSERT(spec.rotation_heads.size() <= kCheckpointHeadsMax);
  flatbuffers::FlatBufferBuilder fbb(1024);
  std::vector<flatbuffers::Offset<fb::MemberGrant>> grants;
  for (const MemberGrantSpec& m : spec.members) {
    fb::Key256 mk = ToKey(m.member);
    std::vector<uint8_t> sealed = SealGrant(m.member, spec, m.write);
    grants.push_back(fb::CreateMemberGrant(fbb, &mk, fbb.CreateVector(sealed)));
  }
  auto grants_off = fbb.CreateVector(grants);
  std::vector<fb::Key256> heads = ToKeys(spec.rotation_heads);
  auto heads_off = fbb.CreateVectorOfStructs(heads);
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> prev_off;
  Nonce prev_nonce{};
  if (spec.previous_key) {
    random(prev_nonce);
    std::vector<uint8_t> sealed;
    SealContent(spec.content_key, prev_nonce, spec.room_id, *spec.previous_key, &sealed);
    prev_off = fbb.CreateVector(sealed);
  }
  fb::Key256 room = ToKey(spec.room_id);
  KeyPair write = KeyPair::FromSeed(spec.write_seed);
  fb::Key256 wk = ToKey(write.public_key);
  fb::Nonce192 pn = ToNonce(prev_nonce);
  fbb.Finish(fb::CreateKeyEpochBody(fbb, fb::RecordKind::KeyEpoch, &room, spec.epoch, &wk,
                                    heads_off, grants_off, prev_off,
                                    spec.previous_key ? &pn : nullptr));
  return Envelope(Bytes(fbb.GetBufferPointer(), fbb.GetSize()), admin.secret_key);
}

Verdict ParseKeyEpoch(Bytes record, const Hash256& room, const PublicKey& admin,
                      const KeyPair* me, KeyEpoch* out) {
  if (record.size() > kKeyEpochBytesMax) return Verdict::kTooLong;
  const fb::KeyEpochBody* body = nullptr;
  Bytes signed_bytes;
  Signature sig;
  Verdict v = OpenEnvelope(record, fb::RecordKind::KeyEpoch, &body, &signed_bytes, &sig);
  if (v != Verdict::kOk) return v;
  if (FromKey(*body->room()) != room) return Verdict::kWrongRoom;
  if (body->grants() != nullptr && body->grants()->size() > kMembersMax) {
    return Verdict::kBadField;
  }
  const auto* heads = body->rotation_heads();
  if (heads != nullptr && heads->size() > kCheckpointHeadsMax) return Verdict::kBadField;
  if ((body->previous_key() == nullptr) != (body->previous_nonce() == nullptr)) {
    return Verdict::kBadField;
  }
  if (!wire::VerifySignature(admin, signed_bytes, sig)) return Verdict::kBadSignature;
  KeyEpoch k;
  k.epoch = body->epoch();
  k.write_key = FromKey(*body->write_key());
  k.rotation_heads = KeysOf(heads);
  if (const auto* pk = body->previous_key(); pk != nullptr) {
    k.previous_box.assign(pk->begin(), pk->end());
    k.previous_nonce = FromNonce(*body->previous_nonce());
  }
  if (me != nullptr && OpenGrant(body, *me, &k) && !k.previous_box.empty()) {
    std::vector<uint8_t> plain;
    if (OpenContent(*k.content_key, k.previous_nonce, room, k.previous_box, &plain) &&
        plain.size() == 32) {
      ContentKey prev;
      std::memcpy(prev.data(), plain.data(), 32);
      k.previous_key = prev;
    }
  }
  *out = std::move(k);
  return Verdict::kOk;
}

Verdict ListGrants(Bytes record, const Hash256& room, const PublicKey& admin,
                   std::vector<MemberGrantSpec>* out) {
  KeyEpoch k;
  const Verdict v = ParseKeyEpoch(record, room, admin, nullptr, &k);
  if (v != Verdict::kOk) return v;
  // ParseKeyEpoch checked the envelope, so reading the body in place is safe.
  const auto* env = flatbuffers::GetRoot<fb::Signed>(record.data());
  const auto* body = flatbuffers::GetRoot<fb::KeyEpochBody>(env->body()->data());
  out->clear();
  if (body->grants() == nullptr) return Verdict::kOk;
  for (const fb::MemberGrant* g : *body->grants()) {
    MemberGrantSpec m;
    std::memcpy(m.member.data(), g->member()->b()->Data(), 32);
    m.write = g->sealed()->size() == crypto_box_SEALBYTES + kGrantPlainBytesMax;
    out->push_back(m);
  }
  RP_ASSERT(out->size() <= kMembersMax);
  return Verdict::kOk;
}

// ---- updates ----

Verdict DecodeUpdate(Bytes record, const Hash256& room, UpdateView* out) noexcept {
  if (record.size() < kUpdateBytesMin) return Verdict::kTooShort;
  if (record.size() > kUpdateBytesMax) return Verdict::kTooLong;
  const fb::UpdateBody* body = nullptr;
  Verdict v = OpenEnvelope(record, fb::RecordKind::Update, &body, &out->signed_bytes,
                           &out->signature);
  if (v != Verdict::kOk) return v;
  if (std::memcmp(body->room()->b()->Data(), room.data(), 32) != 0) return Verdict::kWrongRoom;
  if (body->parents() != nullptr && body->parents()->size() > kParentsMax) {
    return Verdict::kBadField;
  }
  if (body->ciphertext()->size() < kAeadTagBytes) return Verdict::kBadField;
  out->body = body;
  out->epoch = body->epoch();
  out->id = wire::Blake2b256(out->signed_bytes);
  return Verdict::kOk;
}

bool CheckUpdateSignature(const UpdateView& u, const PublicKey& write_key) noexcept {
  return wire::VerifySignature(write_key, u.signed_bytes, u.signature);
}

std::optional<Hash256> ReissueOf(const fb::UpdateBody& body) noexcept {
  if (body.reissue_of() == nullptr) return std::nullopt;
  return FromKey(*body.reissue_of());
}

size_t UpdatePayloadBytesMax(size_t parents_count) noexcept {
  // Envelope and body framing measured generously: vtables, offsets, padding, and the
  // re-issue field (so a payload that fits once fits again when it is re-issued).
  constexpr size_t kFraming = 64 + 32 + 24 + kAeadTagBytes + 96 + 40;
  const size_t fixed = kFraming + parents_count * 32;
  return fixed >= kUpdateBytesMax ? 0 : std::min(kUpdatePayloadBytesMax, kUpdateBytesMax - fixed);
}

std::vector<uint8_t> MakeUpdate(const Hash256& room, uint32_t epoch, const KeyPair& write,
                                const ContentKey& key, std::span<const Hash256> parents,
                                Bytes payload, const Nonce& nonce, const Hash256* reissue_of) {
  RP_ASSERT(parents.size() <= kParentsMax);
  std::vector<uint8_t> cipher;
  SealContent(key, nonce, room, payload, &cipher);
  flatbuffers::FlatBufferBuilder fbb(payload.size() + 256 + parents.size() * 32);
  std::vector<fb::Key256> ps = ToKeys(parents);
  auto parents_off = fbb.CreateVectorOfStructs(ps);
  auto cipher_off = fbb.CreateVector(cipher);
  fb::Key256 r = ToKey(room);
  fb::Nonce192 n = ToNonce(nonce);
  fb::Key256 original{};
  if (reissue_of != nullptr) original = ToKey(*reissue_of);
  fbb.Finish(fb::CreateUpdateBody(fbb, fb::RecordKind::Update, &r, epoch, parents_off, &n,
                                  cipher_off, reissue_of != nullptr ? &original : nullptr));
  std::vector<uint8_t> record =
      Envelope(Bytes(fbb.GetBufferPointer(), fbb.GetSize()), write.secret_key);
  if (record.size() > kUpdateBytesMax) return {};
  return record;
}

// ---- content encryption ----

void SealContent(const ContentKey& key, const Nonce& nonce, const Hash256& room, Bytes plain,
                 std::vector<uint8_t>* out) {
  out->resize(plain.size() + kAeadTagBytes);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out->data(), &written, plain.data(), plain.size(),
                                             room.data(), room.size(), nullptr, nonce.data(),
                                             key.data());
  RP_ASSERT(written == out->size());
}

bool OpenContent(const ContentKey& key, const Nonce& nonce, const Hash256& room, Bytes cipher,
                 std::vector<uint8_t>* out) noexcept {
  if (cipher.size() < kAeadTagBytes) return false;
  // resize() keeps capacity, so a reused buffer costs no allocation on the hot path.
  base::ReserveHuge(*out, cipher.size() - kAeadTagBytes);
  out->resize(cipher.size() - kAeadTagBytes);
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out->data(), &written, nullptr, cipher.data(),
                                                 cipher.size(), room.data(), room.size(),
                                                 nonce.data(), key.data()) != 0) {
    out->clear();
    return false;
  }
  return true;
}

// ---- checkpoints ----

std::vector<uint8_t> MakeCheckpoint(const Hash256& room, uint32_t epoch, const KeyPair& write,
                                    const ContentKey& key, std::span<const Hash256> heads,
                                    const Hash256& state_hash, Bytes state, const Nonce& nonce,
                                    std::vector<uint8_t>* blob, uint64_t covered) {
  RP_ASSERT(heads.size() <= kCheckpointHeadsMax);
  SealContent(key, nonce, room, state, blob);
  flatbuffers::FlatBufferBuilder fbb(512 + heads.size() * 32);
  std::vector<fb::Key256> hs = ToKeys(heads);
  auto heads_off = fbb.CreateVectorOfStructs(hs);
  fb::Key256 r = ToKey(room);
  fb::Key256 sh = ToKey(state_hash);
  fb::Key256 bh = ToKey(wire::Blake2b256(*blob));
  fb::Nonce192 n = ToNonce(nonce);
  fbb.Finish(fb::CreateCheckpointBody(fbb, fb::RecordKind::Checkpoint, &r, epoch, heads_off, &sh,
                                      &bh, blob->size(), &n, covered));
  return Envelope(Bytes(fbb.GetBufferPointer(), fbb.GetSize()), write.secret_key);
}

Verdict DecodeCheckpoint(Bytes record, const Hash256& room, CheckpointInfo* out,
                         Bytes* signed_bytes, Signature* signature) {
  if (record.size() > kCheckpointBytesMax) return Verdict::kTooLong;
  const fb::CheckpointBody* body = nullptr;
  Verdict v = OpenEnvelope(record, fb::RecordKind::Checkpoint, &body, signed_bytes, signature);
  if (v != Verdict::kOk) return v;
  if (FromKey(*body->room()) != room) return Verdict::kWrongRoom;
  if (body->heads()->size() > kCheckpointHeadsMax) return Verdict::kBadField;
  out->id = wire::Blake2b256(*signed_bytes);
  out->epoch = body->epoch();
  out->heads = KeysOf(body->heads());
  out->state_hash = FromKey(*body->state_hash());
  out->blob_hash = FromKey(*body->blob_hash());
  out->blob_bytes = body->blob_bytes();
  out->nonce = FromNonce(*body->nonce());
  out->covered = body->covered();
  return Verdict::kOk;
}

}  // namespace ringpeer::room
