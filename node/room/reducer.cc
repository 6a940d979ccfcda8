#include "node/room/reducer.h"

#include <cstring>

#include "base/assert.h"

namespace ringpeer::room {
namespace {

// Little-endian appenders and a bounds-checked reader for the state formats.
void PutU16(std::vector<uint8_t>* out, uint16_t v) {
  out->push_back(static_cast<uint8_t>(v));
  out->push_back(static_cast<uint8_t>(v >> 8));
}
void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void PutBytes(std::vector<uint8_t>* out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out->insert(out->end(), b, b + n);
}

class Reader {
 public:
  explicit Reader(Bytes b) : b_(b) {}
  bool U8(uint8_t* v) { return Take(v, 1); }
  bool U16(uint16_t* v) {
    uint8_t t[2];
    if (!Take(t, 2)) return false;
    *v = static_cast<uint16_t>(t[0] | t[1] << 8);
    return true;
  }
  bool U32(uint32_t* v) {
    uint8_t t[4];
    if (!Take(t, 4)) return false;
    *v = uint32_t{t[0]} | uint32_t{t[1]} << 8 | uint32_t{t[2]} << 16 | uint32_t{t[3]} << 24;
    return true;
  }
  bool Take(void* out, size_t n) {
    if (b_.size() - pos_ < n) return false;
    std::memcpy(out, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool Str(std::string* s, size_t n) {
    if (b_.size() - pos_ < n) return false;
    s->assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == b_.size(); }

 private:
  Bytes b_;
  size_t pos_ = 0;
};

constexpr uint64_t kChatMemberFixedBytes = 32 + 1;   // author ‖ nick length
constexpr uint64_t kChatMessageFixedBytes = 32 + 2;  // author ‖ text length
constexpr uint64_t kKvEntryFixedBytes = 2 + 4;

}  // namespace

std::unique_ptr<Reducer> MakeReducer(ReducerKind kind) {
  switch (kind) {
    case ReducerKind::kChat: return std::make_unique<ChatReducer>();
    case ReducerKind::kKv: return std::make_unique<KvReducer>();
    case ReducerKind::kOpaque: return nullptr;
  }
  return nullptr;
}

// ---- chat ----

std::vector<uint8_t> ChatPayload(ChatOp op, const PublicKey& author, std::string_view text) {
  std::vector<uint8_t> out;
  out.reserve(kChatPayloadHeaderBytes + text.size());
  out.push_back(static_cast<uint8_t>(op));
  PutBytes(&out, author.data(), author.size());
  PutBytes(&out, text.data(), text.size());
  return out;
}

Verdict ChatReducer::Apply(Bytes payload, uint64_t state_bytes_max) noexcept {
  if (payload.size() < kChatPayloadHeaderBytes) return Verdict::kBadPayload;
  PublicKey author;
  std::memcpy(author.data(), payload.data() + 1, 32);
  const char* text = reinterpret_cast<const char*>(payload.data() + kChatPayloadHeaderBytes);
  const size_t text_bytes = payload.size() - kChatPayloadHeaderBytes;
  switch (static_cast<ChatOp>(payload[0])) {
    case ChatOp::kJoin:
    case ChatOp::kNick: {
      if (text_bytes > kChatNickBytesMax) return Verdict::kBadPayload;
      auto it = members_.find(author);
      const uint64_t old_bytes = it == members_.end() ? 0 : kChatMemberFixedBytes + it->second.size();
      if (it == members_.end() && members_.size() >= kChatMembersMax) return Verdict::kOverCap;
      const uint64_t next = state_bytes_ - old_bytes + kChatMemberFixedBytes + text_bytes;
      if (next > state_bytes_max) return Verdict::kOverCap;
      members_[author].assign(text, text_bytes);
      state_bytes_ = next;
      return Verdict::kOk;
    }
    case ChatOp::kLeave: {
      if (text_bytes != 0) return Verdict::kBadPayload;
      auto it = members_.find(author);
      if (it == members_.end()) return Verdict::kOk;
      state_bytes_ -= kChatMemberFixedBytes + it->second.size();
      members_.erase(it);
      return Verdict::kOk;
    }
    case ChatOp::kMessage: {
      if (text_bytes > UINT16_MAX) return Verdict::kBadPayload;
      // Older messages fall off the front: past kChatMessagesMax, and while the state would
      // pass its cap (long messages: 80 of 64 KiB fill 5 MB). Over the cap only when the
      // members alone and this one message do not fit.
      uint64_t next = state_bytes_ + kChatMessageFixedBytes + text_bytes;
      size_t drop = messages_.size() >= kChatMessagesMax ? 1 : 0;
      for (size_t i = 0; i < drop; ++i) next -= kChatMessageFixedBytes + messages_[i].text.size();
      while (next > state_bytes_max && drop < messages_.size()) {
        next -= kChatMessageFixedBytes + messages_[drop].text.size();
        ++drop;
      }
      if (next > state_bytes_max) return Verdict::kOverCap;
      for (size_t i = 0; i < drop; ++i) messages_.pop_front();
      messages_.push_back(Message{author, std::string(text, text_bytes)});
      state_bytes_ = next;
      return Verdict::kOk;
    }
  }
  return Verdict::kBadPayload;
}

void ChatReducer::Serialize(std::vector<uint8_t>* out) const {
  out->clear();
  out->reserve(state_bytes_);
  PutU32(out, static_cast<uint32_t>(members_.size()));
  for (const auto& [author, nick] : members_) {
    PutBytes(out, author.data(), author.size());
    out->push_back(static_cast<uint8_t>(nick.size()));
    PutBytes(out, nick.data(), nick.size());
  }
  PutU32(out, static_cast<uint32_t>(messages_.size()));
  for (const Message& m : messages_) {
    PutBytes(out, m.author.data(), m.author.size());
    PutU16(out, static_cast<uint16_t>(m.text.size()));
    PutBytes(out, m.text.data(), m.text.size());
  }
  RP_ASSERT(out->size() == state_bytes_);
}

bool ChatReducer::Load(Bytes state) {
  Clear();
  Reader r(state);
  uint32_t members_count = 0, messages_count = 0;
  if (!r.U32(&members_count) || members_count > kChatMembersMax) return Clear(), false;
  for (uint32_t i = 0; i < members_count; ++i) {
    PublicKey author;
    uint8_t len = 0;
    std::string nick;
    if (!r.Take(author.data(), 32) || !r.U8(&len) || len > kChatNickBytesMax) return Clear(), false;
    if (!r.Str(&nick, len)) return Clear(), false;
    state_bytes_ += kChatMemberFixedBytes + len;
    members_[author] = std::move(nick);
  }
  if (members_.size() != members_count) return Clear(), false;  // duplicate keys
  if (!r.U32(&messages_count) || messages_count > kChatMessagesMax) return Clear(), false;
  for (uint32_t i = 0; i < messages_count; ++i) {
    Message m;
    uint16_t len = 0;
    if (!r.Take(m.author.data(), 32) || !r.U16(&len) || !r.Str(&m.text, len)) {
      return Clear(), false;
    }
    state_bytes_ += kChatMessageFixedBytes + len;
    messages_.push_back(std::move(m));
  }
  if (!r.done()) return Clear(), false;
  return true;
}

void ChatReducer::Clear() noexcept {
  members_.clear();
  messages_.clear();
  state_bytes_ = 8;
}

// ---- kv ----

std::vector<uint8_t> KvPayload(KvOp op, std::string_view key, std::string_view value) {
  RP_ASSERT(key.size() <= kKvKeyBytesMax);
  std::vector<uint8_t> out;
  out.push_back(static_cast<uint8_t>(op));
  PutU16(&out, static_cast<uint16_t>(key.size()));
  PutBytes(&out, key.data(), key.size());
  PutBytes(&out, value.data(), value.size());
  return out;
}

Verdict KvReducer::Apply(Bytes payload, uint64_t state_bytes_max) noexcept {
  Reader r(payload);
  uint8_t op = 0;
  uint16_t key_bytes = 0;
  std::string key;
  if (!r.U8(&op) || !r.U16(&key_bytes) || key_bytes > kKvKeyBytesMax) return Verdict::kBadPayload;
  if (!r.Str(&key, key_bytes)) return Verdict::kBadPayload;
  const size_t value_offset = 3 + key_bytes;
  const size_t value_bytes = payload.size() - value_offset;
  auto it = entries_.find(key);
  const uint64_t old_bytes =
      it == entries_.end() ? 0 : kKvEntryFixedBytes + it->first.size() + it->second.size();
  if (op == static_cast<uint8_t>(KvOp::kDelete)) {
    if (value_bytes != 0) return Verdict::kBadPayload;
    if (it != entries_.end()) entries_.erase(it);
    state_bytes_ -= old_bytes;
    return Verdict::kOk;
  }
  if (op != static_cast<uint8_t>(KvOp::kSet)) return Verdict::kBadPayload;
  const uint64_t next = state_bytes_ - old_bytes + kKvEntryFixedBytes + key_bytes + value_bytes;
  if (next > state_bytes_max) return Verdict::kOverCap;
  const char* value = reinterpret_cast<const char*>(payload.data() + value_offset);
  entries_[std::move(key)].assign(value, value_bytes);
  state_bytes_ = next;
  return Verdict::kOk;
}

void KvReducer::Serialize(std::vector<uint8_t>* out) const {
  out->clear();
  out->reserve(state_bytes_);
  PutU32(out, static_cast<uint32_t>(entries_.size()));
  for (const auto& [k, v] : entries_) {
    PutU16(out, static_cast<uint16_t>(k.size()));
    PutBytes(out, k.data(), k.size());
    PutU32(out, static_cast<uint32_t>(v.size()));
    PutBytes(out, v.data(), v.size());
  }
  RP_ASSERT(out->size() == state_bytes_);
}

bool KvReducer::Load(Bytes state) {
  Clear();
  Reader r(state);
  uint32_t count = 0;
  if (!r.U32(&count)) return false;
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t kb = 0;
    uint32_t vb = 0;
    std::string k, v;
    if (!r.U16(&kb) || kb > kKvKeyBytesMax || !r.Str(&k, kb)) return Clear(), false;
    if (!r.U32(&vb) || !r.Str(&v, vb)) return Clear(), false;
    state_bytes_ += kKvEntryFixedBytes + kb + vb;
    entries_[std::move(k)] = std::move(v);
  }
  if (entries_.size() != count || !r.done()) return Clear(), false;
  return true;
}

void KvReducer::Clear() noexcept {
  entries_.clear();
  state_bytes_ = 4;
}

}  // namespace ringpeer::room
