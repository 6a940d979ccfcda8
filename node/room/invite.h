// Invites: the text a person pastes to join a room.
//
// Form: "ringpeer:1:" followed by the lower-case base32 (RFC 4648, no padding) of
//   room id (32) ‖ flags (1) ‖ epoch (u32 LE) ‖ [content key (32)] ‖ [write seed (32)] ‖
//   [member seed (32)] ‖ [records: genesis length (u16 LE) ‖ genesis ‖ epoch count (1) ‖
//   per epoch: length (u16 LE) ‖ key epoch record] ‖
//   address count (1) ‖ per address: family (4 or 6) ‖ ip (4 or 16) ‖ port (u16 LE) ‖
//   checksum: the first 4 bytes of BLAKE2b-256 of everything before it.
// A "self-contained" invite (what `ringpeer room create` prints) carries the member seed
// and the records: the joiner opens the room from the signed genesis and key epochs, and
// the epochs' grants sealed to the member key give it the content key (readers) and the
// write seed (writers). Nothing else is needed to join: the records are checked (the
// genesis must hash to the room id and carry the admin's signature) before use.
// Parsing is forgiving about case and whitespace (line breaks from mail clients) and
// strict about everything else, with an error a person can act on.
//
// An invite that carries keys is a bearer secret: whoever holds it can read (content key)
// and write (write seed) until the next key rotation. Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/endpoint.h"
#include "node/room/records.h"

namespace ringpeer::room {

inline constexpr uint8_t kInviteVersion = 1;
inline constexpr size_t kInviteAddressesMax = 16;
// Records an invite may carry: a genesis and key epochs of a room with a few members fit
// well under this; more would make an invite too long to paste.
inline constexpr size_t kInviteRecordBytesMax = 2048;
inline constexpr size_t kInviteEpochsMax = 8;

struct Invite {
  Hash256 room_id{};
  uint32_t epoch = 0;
  std::optional<ContentKey> content_key;  // read access
  std::optional<WriteSeed> write_seed;    // write access (needs the content key too)
  // The ed25519 seed of the member key the key epochs grant access to (self-contained).
  std::optional<std::array<uint8_t, 32>> member_seed;
  // The signed genesis and key epoch records, epoch 0 first (empty: not carried).
  std::vector<uint8_t> genesis;
  std::vector<std::vector<uint8_t>> epochs;
  std::vector<base::Endpoint> bootstrap;

  friend bool operator==(const Invite&, const Invite&) = default;
};

// FormatInvite: the text form. REQUIRES: at most kInviteAddressesMax valid addresses, no
// write seed without a content key, and records within kInviteRecordBytesMax and
// kInviteEpochsMax (epochs only with a genesis).
std::string FormatInvite(const Invite& invite);
// ParseInvite: the invite, or InvalidArgument with a message starting "invite: ".
absl::StatusOr<Invite> ParseInvite(std::string_view text);

}  // namespace ringpeer::room
