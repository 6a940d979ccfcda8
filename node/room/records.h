// Room records: building and checking genesis, key epochs, updates and checkpoints.
//
// Every record is a Signed envelope (wire/schemas/room.fbs) holding the exact body bytes
// that were signed. Checks run in order of cost: size, FlatBuffers Verifier, fields, and
// only then (by the caller, once it knows which key applies) the signature. The id of a
// record is BLAKE2b-256 of its body, the signed bytes, so re-encoding an envelope cannot
// mint a new id. Records are read in place; a view borrows the caller's bytes, which must
// start 8-byte aligned (std::vector storage is).
//
// Key material: members are named by their ed25519 identity keys; grants are sealed
// (crypto_box_seal) to the X25519 key converted from it, so one key pair serves both.
//
// Pure functions; thread-safe once wire::InitCrypto() has run.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "node/room/verdict.h"
#include "wire/crypto.h"
#include "wire/message.h"
#include "wire/room_generated.h"

namespace ringpeer::room {

using wire::Bytes;
// Bytes several owners keep (a fetched checkpoint object: the swarm serves it, the room
// keeps its blob), immutable once shared.
using SharedBytes = std::shared_ptr<const std::vector<uint8_t>>;
// HoldsBytes: whether `bytes` (not empty) lie within `holder`'s.
inline bool HoldsBytes(const SharedBytes& holder, Bytes bytes) noexcept {
  return holder != nullptr && !bytes.empty() && bytes.data() >= holder->data() &&
         bytes.data() + bytes.size() <= holder->data() + holder->size();
}
using wire::Hash256;
using wire::KeyPair;
using wire::PublicKey;
using wire::Signature;
using ContentKey = std::array<uint8_t, 32>;  // XChaCha20-Poly1305 key: read access
using WriteSeed = std::array<uint8_t, 32>;   // ed25519 seed of the write key: write access
using Nonce = std::array<uint8_t, 24>;
// RandomFn: fills a span with random bytes. Injected so tests are deterministic.
using RandomFn = absl::FunctionRef<void(std::span<uint8_t>)>;

// An update record, envelope included, is at most 66 KiB: a payload of up to 64 KiB
// (kUpdatePayloadBytesMax) with 16 parents and its framing. One of at most
// kUpdateInlineBytesMax travels in one datagram (RoomPublish); a larger one as
// RoomUpdatePiece datagrams, reassembled and verified once whole (node/room/swarm.h).
inline constexpr size_t kUpdateBytesMax = wire::kRoomUpdateBytesMax;
inline constexpr size_t kUpdateInlineBytesMax = wire::kRoomRecordBytesMax;
// The largest payload an application may write (a chat message's text is this less the
// chat header, client::kChatTextBytesMax).
inline constexpr size_t kUpdatePayloadBytesMax = 64 * 1024;
// Smallest possible update record: anything shorter is rejected before the Verifier.
inline constexpr size_t kUpdateBytesMin = 64 + 32 + 24 + 16;
// Most parents one update names: a merge of more branches than this takes two updates.
inline constexpr size_t kParentsMax = 16;
// Most heads a checkpoint lists; a node with more writes a merge update first.
inline constexpr size_t kCheckpointHeadsMax = 64;
// Most members one key epoch grants keys to. A write grant costs 160 bytes of record (the
// member key, the content key and write seed sealed with crypto_box_seal, FlatBuffers
// framing; measured in membership_test), a read grant 32 fewer: 500 members make a record
// of ~80 KB, 1024 of ~164 KB. The bound is memory: a relay holds each epoch whole.
inline constexpr size_t kMembersMax = 1024;
// Largest key epoch record: kMembersMax write grants and the fixed part, with margin.
inline constexpr size_t kKeyEpochBytesMax = wire::kRoomKeyEpochBytesMax;  // 192 KiB
inline constexpr size_t kCheckpointBytesMax = 4096;
// Bytes the AEAD adds to a payload.
inline constexpr size_t kAeadTagBytes = 16;
// Default cap on a room's serialized state.
inline constexpr uint64_t kStateBytesMaxDefault = 5 * 1000 * 1000;

enum class ReducerKind : uint8_t { kChat = 1, kKv = 2, kOpaque = 3 };

// ---- genesis ----

struct Genesis {
  Hash256 room_id{};
  PublicKey admin{};
  std::string name;
  ReducerKind reducer = ReducerKind::kChat;
  uint64_t state_bytes_max = kStateBytesMaxDefault;
};

// MakeGenesis: the signed genesis record of a new room.
std::vector<uint8_t> MakeGenesis(const KeyPair& admin, std::string_view name,
                                 ReducerKind reducer, uint64_t state_bytes_max,
                                 const Hash256& salt);
// ParseGenesis: checks a genesis record, its admin signature, and fills `out`.
Verdict ParseGenesis(Bytes record, Genesis* out);

// ---- key epochs ----

struct MemberGrantSpec {
  PublicKey member{};  // ed25519 identity key
  bool write = true;   // false: read-only member (content key only)
};

struct KeyEpochSpec {
  Hash256 room_id{};
  uint32_t epoch = 0;
  WriteSeed write_seed{};
  ContentKey content_key{};
  std::optional<ContentKey> previous_key;   // lets members read history before rotation
  std::vector<Hash256> rotation_heads;      // empty for epoch 0
  std::vector<MemberGrantSpec> members;
};

// MakeKeyEpoch: the admin-signed key epoch record. Sealing uses libsodium's own
// randomness (crypto_box_seal); the nonce of previous_key comes from `random`.
std::vector<uint8_t> MakeKeyEpoch(const KeyPair& admin, const KeyEpochSpec& spec,
                                  RandomFn random);

// What a node learns from a key epoch: the public part always, keys when it is a member.
struct KeyEpoch {
  uint32_t epoch = 0;
  PublicKey write_key{};
  std::vector<Hash256> rotation_heads;
  std::optional<ContentKey> content_key;
  std::optional<WriteSeed> write_seed;
  std::optional<ContentKey> previous_key;
  // The previous content key sealed under this epoch's (for members that join later).
  std::vector<uint8_t> previous_box;
  Nonce previous_nonce{};
};

// ParseKeyEpoch: checks a key epoch for `room` signed by `admin`; with `me`, opens the
// grant sealed to it (if any).
Verdict ParseKeyEpoch(Bytes record, const Hash256& room, const PublicKey& admin,
                      const KeyPair* me, KeyEpoch* out);
// ListGrants: who a checked key epoch grants keys to, and with which access. Access is
// read from the sealed grant's length (content key alone, or with the write seed), which
// anyone holding the record sees. For `room members`; allocates, not for the packet path.
Verdict ListGrants(Bytes record, const Hash256& room, const PublicKey& admin,
                   std::vector<MemberGrantSpec>* out);

// ---- updates ----

// A decoded, not yet signature-checked update. Borrows the record's bytes.
struct UpdateView {
  Hash256 id{};
  uint32_t epoch = 0;
  const fb::UpdateBody* body = nullptr;
  Bytes signed_bytes;
  Signature signature{};
};

// DecodeUpdate: size, Verifier, kind, room and parent-count checks; computes the id.
Verdict DecodeUpdate(Bytes record, const Hash256& room, UpdateView* out) noexcept;
// CheckUpdateSignature: the expensive last step.
bool CheckUpdateSignature(const UpdateView& u, const PublicKey& write_key) noexcept;
// MakeUpdate: encrypts `payload` and signs the record. Returns an empty vector when the
// record would exceed kUpdateBytesMax.
// `reissue_of` (may be null): the original this update re-issues (room.h, "Re-issue").
std::vector<uint8_t> MakeUpdate(const Hash256& room, uint32_t epoch, const KeyPair& write,
                                const ContentKey& key, std::span<const Hash256> parents,
                                Bytes payload, const Nonce& nonce,
                                const Hash256* reissue_of = nullptr);
// ReissueOf: the original a decoded update re-issues, if it is a re-issue.
std::optional<Hash256> ReissueOf(const fb::UpdateBody& body) noexcept;
// Largest payload an update with `parents_count` parents can carry.
size_t UpdatePayloadBytesMax(size_t parents_count) noexcept;

// ---- content encryption (XChaCha20-Poly1305, associated data = room id) ----

// Seal: ciphertext ‖ tag into `out` (resized). Open: false when the tag does not verify;
// `out` is resized to the plaintext size.
void SealContent(const ContentKey& key, const Nonce& nonce, const Hash256& room, Bytes plain,
                 std::vector<uint8_t>* out);
bool OpenContent(const ContentKey& key, const Nonce& nonce, const Hash256& room,
                 Bytes cipher, std::vector<uint8_t>* out) noexcept;

// ---- checkpoints ----

struct CheckpointInfo {
  Hash256 id{};
  uint32_t epoch = 0;
  std::vector<Hash256> heads;
  Hash256 state_hash{};
  Hash256 blob_hash{};
  uint64_t blob_bytes = 0;
  Nonce nonce{};
  uint64_t covered = 0;  // updates up to and including the heads (the rank; see room.h)
};

// MakeCheckpoint: signs (heads, state hash, hash of the encrypted state). Fills `blob`
// with the encrypted state. Returns the record.
std::vector<uint8_t> MakeCheckpoint(const Hash256& room, uint32_t epoch, const KeyPair& write,
                                    const ContentKey& key, std::span<const Hash256> heads,
                                    const Hash256& state_hash, Bytes state, const Nonce& nonce,
                                    std::vector<uint8_t>* blob, uint64_t covered = 0);
// DecodeCheckpoint: size, Verifier, fields; fills `out` (no signature check).
Verdict DecodeCheckpoint(Bytes record, const Hash256& room, CheckpointInfo* out,
                         Bytes* signed_bytes, Signature* signature);

// Conversions between fixed arrays and the schema's structs.
fb::Key256 ToKey(const Hash256& k) noexcept;
Hash256 FromKey(const fb::Key256& k) noexcept;

}  // namespace ringpeer::room
