#include "examples/todo/todo.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace todo {
namespace {

using ringpeer::room::Verdict;
using ringpeer::wire::Bytes;

constexpr uint8_t kStateFormat = 1;
constexpr uint64_t kItemFixedBytes = 4 + 1 + 2;  // number, done, text length

void PutU16(std::vector<uint8_t>* out, uint16_t v) {
  out->push_back(static_cast<uint8_t>(v));
  out->push_back(static_cast<uint8_t>(v >> 8));
}
void PutU32(std::vector<uint8_t>* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A bounds-checked little-endian reader.
class Reader {
 public:
  explicit Reader(Bytes b) : b_(b) {}
  bool U8(uint8_t* v) {
    if (left() < 1) return false;
    *v = b_[pos_++];
    return true;
  }
  bool U16(uint16_t* v) {
    if (left() < 2) return false;
    *v = static_cast<uint16_t>(b_[pos_] | b_[pos_ + 1] << 8);
    pos_ += 2;
    return true;
  }
  bool U32(uint32_t* v) {
    if (left() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= uint32_t{b_[pos_ + i]} << (8 * i);
    pos_ += 4;
    return true;
  }
  bool Str(std::string* s, size_t n) {
    if (left() < n) return false;
    s->assign(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  size_t left() const { return b_.size() - pos_; }
  Bytes rest() const { return b_.subspan(pos_); }

 private:
  Bytes b_;
  size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> AddPayload(std::string_view text) {
  std::vector<uint8_t> p;
  p.push_back(static_cast<uint8_t>(Op::kAdd));
  PutU16(&p, static_cast<uint16_t>(text.size()));
  p.insert(p.end(), text.begin(), text.end());
  return p;
}

std::vector<uint8_t> DonePayload(uint32_t number, bool done) {
  std::vector<uint8_t> p;
  p.push_back(static_cast<uint8_t>(Op::kDone));
  PutU32(&p, number);
  p.push_back(done ? 1 : 0);
  return p;
}

std::vector<uint8_t> RemovePayload(uint32_t number) {
  std::vector<uint8_t> p;
  p.push_back(static_cast<uint8_t>(Op::kRemove));
  PutU32(&p, number);
  return p;
}

std::string Describe(Bytes payload) {
  Reader r(payload);
  uint8_t op = 0;
  if (!r.U8(&op)) return "empty update";
  uint16_t len = 0;
  uint32_t number = 0;
  uint8_t done = 0;
  std::string text;
  switch (static_cast<Op>(op)) {
    case Op::kAdd:
      if (r.U16(&len) && r.Str(&text, len)) return absl::StrCat("add '", text, "'");
      break;
    case Op::kDone:
      if (r.U32(&number) && r.U8(&done)) {
        return absl::StrCat(done ? "done #" : "not done #", number);
      }
      break;
    case Op::kRemove:
      if (r.U32(&number)) return absl::StrCat("remove #", number);
      break;
  }
  return absl::StrCat("unknown op ", op, " (a newer version's; skipped)");
}

bool IsTodoRoom(const ringpeer::room::Genesis& genesis) {
  return genesis.reducer == ringpeer::room::ReducerKind::kOpaque &&
         std::string_view(genesis.name).substr(0, kRoomPrefix.size()) == kRoomPrefix;
}

// Apply: O(log items) per update. An update this version cannot read changes nothing and
// is not an error (see todo.h), so members of every version agree on what was applied.
Verdict TodoReducer::Apply(Bytes payload, uint64_t state_bytes_max) noexcept {
  Reader r(payload);
  uint8_t op = 0;
  if (!r.U8(&op)) return Verdict::kBadPayload;  // no version writes an empty update
  switch (static_cast<Op>(op)) {
    case Op::kAdd: {
      uint16_t len = 0;
      std::string text;
      if (!r.U16(&len) || len > kTextBytesMax || !r.Str(&text, len)) break;
      const uint64_t next = state_bytes_ + kItemFixedBytes + len;
      if (items_.size() >= kItemsMax || next > state_bytes_max) return Verdict::kOverCap;
      items_.emplace(next_number_++, Item{false, std::move(text)});
      state_bytes_ = next;
      return Verdict::kOk;
    }
    case Op::kDone: {
      uint32_t number = 0;
      uint8_t done = 0;
      if (!r.U32(&number) || !r.U8(&done)) break;
      auto it = items_.find(number);
      if (it != items_.end()) it->second.done = done != 0;  // a removed item: nothing to do
      return Verdict::kOk;
    }
    case Op::kRemove: {
      uint32_t number = 0;
      if (!r.U32(&number)) break;
      auto it = items_.find(number);
      if (it != items_.end()) {
        state_bytes_ -= kItemFixedBytes + it->second.text.size();
        items_.erase(it);
      }
      return Verdict::kOk;
    }
  }
  ++skipped_;
  return Verdict::kOk;
}

void TodoReducer::Serialize(std::vector<uint8_t>* out) const {
  out->clear();
  out->reserve(state_bytes_);
  out->push_back(format_);
  PutU32(out, next_number_);
  PutU32(out, static_cast<uint32_t>(items_.size()));
  for (const auto& [number, item] : items_) {
    PutU32(out, number);
    out->push_back(item.done ? 1 : 0);
    PutU16(out, static_cast<uint16_t>(item.text.size()));
    out->insert(out->end(), item.text.begin(), item.text.end());
  }
  out->insert(out->end(), unread_.begin(), unread_.end());
}

bool TodoReducer::Load(Bytes state) {
  Clear();
  Reader r(state);
  uint8_t format = 0;
  uint32_t count = 0;
  if (!r.U8(&format) || format < kStateFormat || !r.U32(&next_number_) || !r.U32(&count) ||
      count > kItemsMax) {
    return Clear(), false;
  }
  uint32_t last = 0;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t number = 0;
    uint8_t done = 0;
    uint16_t len = 0;
    Item item;
    if (!r.U32(&number) || !r.U8(&done) || !r.U16(&len) || len > kTextBytesMax ||
        !r.Str(&item.text, len) || (i > 0 && number <= last) || number >= next_number_) {
      return Clear(), false;  // out of order or duplicate numbers: not a state we wrote
    }
    last = number;
    item.done = done != 0;
    state_bytes_ += kItemFixedBytes + len;
    items_.emplace(number, std::move(item));
  }
  if (format == kStateFormat && r.left() != 0) return Clear(), false;
  // A later format's tail: kept as it came, so a checkpoint this member makes carries it.
  const Bytes rest = r.rest();
  format_ = format;
  unread_.assign(rest.begin(), rest.end());
  state_bytes_ += unread_.size();
  return true;
}

void TodoReducer::Clear() noexcept {
  items_.clear();
  unread_.clear();
  format_ = kStateFormat;
  next_number_ = 1;
  state_bytes_ = 9;
  skipped_ = 0;
}

}  // namespace todo
