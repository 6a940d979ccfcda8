// A shared to-do list as a ringpeer app room: the reducer (node/room/REDUCERS.md) and the
// payloads of its updates. Built on the client library only (node/client, node/room).
//
// The room's genesis name is "todo:<list name>": that is how the app recognizes its rooms
// (IsTodoRoom) when the client asks for a reducer. Relays never run this code.
//
// Updates (payloads, before the room encrypts them): one op byte, then the op's fields.
// An op's fields may grow at their end in a later version, and older readers ignore what
// follows the fields they know; an op whose meaning changes gets a new op byte. An op
// this version does not know, or a known op too short to read, changes nothing (Apply
// returns kOk), so that members of every version fold the same updates.
//
//   kAdd    (1): u16 text length (LE) ‖ text          -> item number next_number++
//   kDone   (2): u32 item number (LE) ‖ u8 done (0/1)
//   kRemove (3): u32 item number (LE)
//
// State (what checkpoints carry): u8 format (1) ‖ u32 next_number ‖ u32 count ‖ count x
// (u32 number ‖ u8 done ‖ u16 length ‖ text), items by number, ascending; a later format
// may append bytes after the items, which this version keeps unread and writes back.
//
// Owned by one Room (shard thread) or by the application thread (a copy loaded from
// RoomState::state); not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/btree_map.h"
#include "node/room/reducer.h"

namespace todo {

inline constexpr std::string_view kRoomPrefix = "todo:";
inline constexpr size_t kTextBytesMax = 512;
inline constexpr size_t kItemsMax = 10000;

enum class Op : uint8_t { kAdd = 1, kDone = 2, kRemove = 3 };

std::vector<uint8_t> AddPayload(std::string_view text);
std::vector<uint8_t> DonePayload(uint32_t number, bool done);
std::vector<uint8_t> RemovePayload(uint32_t number);
// Describe: a payload as one line for a person ("add 'milk'"), or "unknown op N".
std::string Describe(ringpeer::wire::Bytes payload);

// IsTodoRoom: the genesis names a to-do list (and asks for an app reducer).
bool IsTodoRoom(const ringpeer::room::Genesis& genesis);

class TodoReducer final : public ringpeer::room::Reducer {
 public:
  struct Item {
    bool done = false;
    std::string text;
  };
  using Verdict = ringpeer::room::Verdict;

  Verdict Apply(ringpeer::wire::Bytes payload, uint64_t state_bytes_max) noexcept override;
  uint64_t StateBytes() const noexcept override { return state_bytes_; }
  void Serialize(std::vector<uint8_t>* out) const override;
  bool Load(ringpeer::wire::Bytes state) override;
  void Clear() noexcept override;

  const absl::btree_map<uint32_t, Item>& items() const { return items_; }
  uint32_t next_number() const { return next_number_; }
  // Updates skipped since Clear/Load: ops this version cannot read (not part of the state).
  uint64_t skipped() const { return skipped_; }

 private:
  absl::btree_map<uint32_t, Item> items_;  // ordered: deterministic serialization
  uint32_t next_number_ = 1;
  uint8_t format_ = 1;           // the state format loaded (ours, or a later one)
  std::vector<uint8_t> unread_;  // a later state format's tail, kept as it came
  uint64_t state_bytes_ = 9;     // format, next_number, count
  uint64_t skipped_ = 0;
};

}  // namespace todo
