#include "node/room/invite.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/assert.h"

namespace ringpeer::room {
namespace {

constexpr char kPrefix[] = "ringpeer:";
constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
constexpr size_t kChecksumBytes = 4;
constexpr uint8_t kFlagContentKey = 1;
constexpr uint8_t kFlagWriteSeed = 2;
constexpr uint8_t kFlagMemberSeed = 4;
constexpr uint8_t kFlagRecords = 8;

std::string Base32(const std::vector<uint8_t>& data) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t b : data) {
    buffer = buffer << 8 | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

absl::StatusOr<std::vector<uint8_t>> FromBase32(std::string_view text, size_t offset) {
  std::vector<uint8_t> out;
  uint32_t buffer = 0;
  int bits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    const char* at = std::strchr(kAlphabet, c);
    if (c == 0 || at == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("invite: bad character '", std::string(1, text[i]), "' at position ",
                       offset + i));
    }
    buffer = buffer << 5 | static_cast<uint32_t>(at - kAlphabet);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<uint8_t>(buffer >> (bits - 8)));
      bits -= 8;
    }
  }
  return out;
}

std::array<uint8_t, kChecksumBytes> Checksum(const uint8_t* data, size_t size) {
  Hash256 h = wire::Blake2b256(Bytes(data, size));
  std::array<uint8_t, kChecksumBytes> out;
  std::memcpy(out.data(), h.data(), out.size());
  return out;
}

// Cursor: bounds-checked reads from the decoded payload.
struct Cursor {
  const std::vector<uint8_t>& b;
  size_t pos = 0;
  bool Take(void* out, size_t n) {
    if (b.size() - pos < n) return false;
    std::memcpy(out, b.data() + pos, n);
    pos += n;
    return true;
  }
};

absl::Status Truncated() { return absl::InvalidArgumentError("invite: truncated"); }

bool TakeRecord(Cursor& c, std::vector<uint8_t>* out) {
  uint8_t len[2];
  if (!c.Take(len, 2)) return false;
  const size_t n = size_t{len[0]} | size_t{len[1]} << 8;
  if (n == 0 || n > kInviteRecordBytesMax) return false;
  out->resize(n);
  return c.Take(out->data(), n);
}

// DecodeRecords: the genesis and key epochs. The genesis is checked here (signature, and
// that it is the room the invite names) so that a mixed-up paste fails with a clear line;
// the epochs are checked by the room when it opens.
absl::Status DecodeRecords(Cursor& c, Invite* inv) {
  if (!TakeRecord(c, &inv->genesis)) return Truncated();
  uint8_t count = 0;
  if (!c.Take(&count, 1)) return Truncated();
  if (count > kInviteEpochsMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("invite: ", int{count}, " key epochs (at most ", kInviteEpochsMax, ")"));
  }
  inv->epochs.resize(count);
  for (auto& e : inv->epochs) {
    if (!TakeRecord(c, &e)) return Truncated();
  }
  Genesis g;
  if (ParseGenesis(inv->genesis, &g) != Verdict::kOk) {
    return absl::InvalidArgumentError("invite: the room's genesis record is invalid");
  }
  if (g.room_id != inv->room_id) {
    return absl::InvalidArgumentError("invite: the genesis record is not this room's");
  }
  return absl::OkStatus();
}

void PutRecord(std::vector<uint8_t>* p, const std::vector<uint8_t>& r) {
  RP_ASSERT(!r.empty());
  RP_ASSERT(r.size() <= kInviteRecordBytesMax);
  p->push_back(static_cast<uint8_t>(r.size()));
  p->push_back(static_cast<uint8_t>(r.size() >> 8));
  p->insert(p->end(), r.begin(), r.end());
}

absl::StatusOr<Invite> Decode(const std::vector<uint8_t>& payload) {
  Cursor c{payload};
  Invite inv;
  uint8_t flags = 0, count = 0, epoch[4];
  if (!c.Take(inv.room_id.data(), 32) || !c.Take(&flags, 1) || !c.Take(epoch, 4)) {
    return Truncated();
  }
  if (flags & ~(kFlagContentKey | kFlagWriteSeed | kFlagMemberSeed | kFlagRecords)) {
    return absl::InvalidArgumentError(absl::StrCat("invite: unknown flags ", int{flags}));
  }
  if ((flags & kFlagWriteSeed) && !(flags & kFlagContentKey)) {
    return absl::InvalidArgumentError("invite: a write key without a content key");
  }
  inv.epoch = uint32_t{epoch[0]} | uint32_t{epoch[1]} << 8 | uint32_t{epoch[2]} << 16 |
              uint32_t{epoch[3]} << 24;
  if (flags & kFlagContentKey) {
    ContentKey k;
    if (!c.Take(k.data(), 32)) return Truncated();
    inv.content_key = k;
  }
  if (flags & kFlagWriteSeed) {
    WriteSeed s;
    if (!c.Take(s.data(), 32)) return Truncated();
    inv.write_seed = s;
  }
  if (flags & kFlagMemberSeed) {
    std::array<uint8_t, 32> s;
    if (!c.Take(s.data(), 32)) return Truncated();
    inv.member_seed = s;
  }
  if (flags & kFlagRecords) {
    absl::Status s = DecodeRecords(c, &inv);
    if (!s.ok()) return s;
  }
  if (!c.Take(&count, 1)) return Truncated();
  if (count > kInviteAddressesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("invite: ", int{count}, " bootstrap addresses (at most ", kInviteAddressesMax,
                     ")"));
  }
  for (uint8_t i = 0; i < count; ++i) {
    base::Endpoint e;
    uint8_t family = 0, port[2];
    if (!c.Take(&family, 1)) return Truncated();
    if (family != 4 && family != 6) {
      return absl::InvalidArgumentError(
          absl::StrCat("invite: bad address family ", int{family}, " in address ", i + 1));
    }
    e.family = family == 4 ? base::Endpoint::Family::kV4 : base::Endpoint::Family::kV6;
    if (!c.Take(e.ip.data(), family == 4 ? 4 : 16) || !c.Take(port, 2)) return Truncated();
    e.port = static_cast<uint16_t>(port[0] | port[1] << 8);
    inv.bootstrap.push_back(e);
  }
  if (c.pos != payload.size()) return absl::InvalidArgumentError("invite: trailing bytes");
  return inv;
}

}  // namespace

std::string FormatInvite(const Invite& inv) {
  RP_ASSERT(inv.bootstrap.size() <= kInviteAddressesMax);
  RP_ASSERT(!inv.write_seed || inv.content_key);
  std::vector<uint8_t> p(inv.room_id.begin(), inv.room_id.end());
  RP_ASSERT(inv.epochs.size() <= kInviteEpochsMax);
  RP_ASSERT(inv.epochs.empty() || !inv.genesis.empty());
  uint8_t flags = (inv.content_key ? kFlagContentKey : 0) | (inv.write_seed ? kFlagWriteSeed : 0);
  if (inv.member_seed) flags |= kFlagMemberSeed;
  if (!inv.genesis.empty()) flags |= kFlagRecords;
  p.push_back(flags);
  for (int i = 0; i < 4; ++i) p.push_back(static_cast<uint8_t>(inv.epoch >> (8 * i)));
  if (inv.content_key) p.insert(p.end(), inv.content_key->begin(), inv.content_key->end());
  if (inv.write_seed) p.insert(p.end(), inv.write_seed->begin(), inv.write_seed->end());
  if (inv.member_seed) p.insert(p.end(), inv.member_seed->begin(), inv.member_seed->end());
  if (!inv.genesis.empty()) {
    PutRecord(&p, inv.genesis);
    p.push_back(static_cast<uint8_t>(inv.epochs.size()));
    for (const auto& e : inv.epochs) PutRecord(&p, e);
  }
  p.push_back(static_cast<uint8_t>(inv.bootstrap.size()));
  for (const base::Endpoint& e : inv.bootstrap) {
    RP_ASSERT(e.valid());
    p.push_back(e.is_v4() ? 4 : 6);
    p.insert(p.end(), e.ip.begin(), e.ip.begin() + (e.is_v4() ? 4 : 16));
    p.push_back(static_cast<uint8_t>(e.port));
    p.push_back(static_cast<uint8_t>(e.port >> 8));
  }
  auto sum = Checksum(p.data(), p.size());
  p.insert(p.end(), sum.begin(), sum.end());
  return absl::StrCat(kPrefix, kInviteVersion, ":", Base32(p));
}

absl::StatusOr<Invite> ParseInvite(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  const size_t prefix_bytes = sizeof(kPrefix) - 1;
  if (text.substr(0, prefix_bytes) != kPrefix) {
    return absl::InvalidArgumentError("invite: does not start with 'ringpeer:'");
  }
  text.remove_prefix(prefix_bytes);
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError("invite: missing version (expected 'ringpeer:1:...')");
  }
  std::string_view version = text.substr(0, colon);
  if (version != "1") {
    return absl::InvalidArgumentError(absl::StrCat(
        "invite: unknown version ", std::string(version), " (this node reads version ", int{kInviteVersion}, ")"));
  }
  auto bytes = FromBase32(text.substr(colon + 1), prefix_bytes + colon + 1);
  if (!bytes.ok()) return bytes.status();
  std::vector<uint8_t>& b = *bytes;
  if (b.size() < 32 + 1 + 4 + 1 + kChecksumBytes) {
    return absl::InvalidArgumentError("invite: too short (cut off when pasted?)");
  }
  const size_t body = b.size() - kChecksumBytes;
  if (Checksum(b.data(), body) !=
      std::array<uint8_t, kChecksumBytes>{b[body], b[body + 1], b[body + 2], b[body + 3]}) {
    return absl::InvalidArgumentError("invite: bad checksum (mistyped or cut off?)");
  }
  b.resize(body);
  return Decode(b);
}

}  // namespace ringpeer::room
