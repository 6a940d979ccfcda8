// Invites: the text a person pastes to join a room.
//
// Form: "ringpeer:1:" followed by the lower-case base32 (RFC 4648, no padding) of
//   room id (32) ‖ flags (1) ‖ epoch (u32 LE) ‖ [content key (32)] ‖ [write seed (32)] ‖
//   address count (1) ‖ per address: family (4 or 6) ‖ ip (4 or 16) ‖ port (u16 LE) ‖
//   checksum: the first 4 bytes of BLAKE2b-256 of everything before it.
// Parsing is forgiving about case and whitespace (line breaks from mail clients) and
// strict about everything else, with an error a person can act on.
//
// An invite that carries keys is a bearer secret: whoever holds it can read (content key)
// and write (write seed) until the next key rotation. Pure functions; thread-safe.
#pragma once

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

struct Invite {
  Hash256 room_id{};
  uint32_t epoch = 0;
  std::optional<ContentKey> content_key;  // read access
  std::optional<WriteSeed> write_seed;    // write access (needs the content key too)
  std::vector<base::Endpoint> bootstrap;

  friend bool operator==(const Invite&, const Invite&) = default;
};

// FormatInvite: the text form. REQUIRES: at most kInviteAddressesMax valid addresses, and
// no write seed without a content key.
std::string FormatInvite(const Invite& invite);
// ParseInvite: the invite, or InvalidArgument with a message starting "invite: ".
absl::StatusOr<Invite> ParseInvite(std::string_view text);

}  // namespace ringpeer::room
