// Reducers: the room state as a fold of reduce(state, payload) along the log's order.
//
// A Reducer owns one room's state. Apply() either applies a payload completely or refuses
// it and leaves the state exactly as it was (a refusal is a Verdict, since payloads come
// from peers). The serialized form is deterministic: replicas holding the same state
// serialize it to the same bytes, which is what checkpoints carry and tests compare.
// Built in: `chat` (members with nicknames, the last kChatMessagesMax messages) and `kv`
// (last writer in the order wins). An embedding application plugs its own in by
// implementing this interface (ReducerKind::kOpaque).
//
// Owned by one Room; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/btree_map.h"
#include "node/room/records.h"
#include "node/room/verdict.h"

namespace ringpeer::room {

class Reducer {
 public:
  virtual ~Reducer() = default;
  // Apply: folds one decrypted payload. Returns kOk, or kBadPayload / kOverCap (when the
  // state would pass `state_bytes_max`); on refusal the state is unchanged.
  virtual Verdict Apply(Bytes payload, uint64_t state_bytes_max) noexcept = 0;
  // StateBytes: the size Serialize() would produce, kept up to date incrementally.
  virtual uint64_t StateBytes() const noexcept = 0;
  // Serialize: the deterministic byte form of the state (replaces `out`'s contents).
  virtual void Serialize(std::vector<uint8_t>* out) const = 0;
  // Load: replaces the state with a serialized one. False (state cleared) when malformed.
  virtual bool Load(Bytes state) = 0;
  // Clear: the empty state of a new room.
  virtual void Clear() noexcept = 0;
};

// MakeReducer: a built-in reducer; nullptr for kOpaque (the application supplies it).
std::unique_ptr<Reducer> MakeReducer(ReducerKind kind);

// ---- chat ----

// Messages kept: older ones fall off the front (bounded memory and state).
inline constexpr size_t kChatMessagesMax = 1000;
inline constexpr size_t kChatMembersMax = 4096;
inline constexpr size_t kChatNickBytesMax = 64;
// A chat payload's header (op and author) before its text.
inline constexpr size_t kChatPayloadHeaderBytes = 1 + 32;

enum class ChatOp : uint8_t { kJoin = 1, kNick = 2, kLeave = 3, kMessage = 4 };

// Chat payload: op (1 byte) ‖ author (32 bytes, the member's claimed identity key; writes
// are not attributable, see README) ‖ text (nickname or message).
std::vector<uint8_t> ChatPayload(ChatOp op, const PublicKey& author, std::string_view text);

class ChatReducer final : public Reducer {
 public:
  struct Message {
    PublicKey author;
    std::string text;
  };

  Verdict Apply(Bytes payload, uint64_t state_bytes_max) noexcept override;
  uint64_t StateBytes() const noexcept override { return state_bytes_; }
  void Serialize(std::vector<uint8_t>* out) const override;
  bool Load(Bytes state) override;
  void Clear() noexcept override;

  const absl::btree_map<PublicKey, std::string>& members() const { return members_; }
  const std::deque<Message>& messages() const { return messages_; }

 private:
  absl::btree_map<PublicKey, std::string> members_;  // ordered: deterministic serialization
  std::deque<Message> messages_;
  uint64_t state_bytes_ = 8;  // two u32 counts
};

// ---- kv ----

inline constexpr size_t kKvKeyBytesMax = 256;

enum class KvOp : uint8_t { kSet = 1, kDelete = 2 };

// Kv payload: op ‖ key length (u16 LE) ‖ key ‖ value (set only).
std::vector<uint8_t> KvPayload(KvOp op, std::string_view key, std::string_view value);

class KvReducer final : public Reducer {
 public:
  Verdict Apply(Bytes payload, uint64_t state_bytes_max) noexcept override;
  uint64_t StateBytes() const noexcept override { return state_bytes_; }
  void Serialize(std::vector<uint8_t>* out) const override;
  bool Load(Bytes state) override;
  void Clear() noexcept override;

  const absl::btree_map<std::string, std::string>& entries() const { return entries_; }

 private:
  absl::btree_map<std::string, std::string> entries_;
  uint64_t state_bytes_ = 4;  // u32 count
};

}  // namespace ringpeer::room
