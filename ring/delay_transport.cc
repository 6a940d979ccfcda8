// DelayTransport (ring/delay_transport.h): hold each send until now + delay.
#include "ring/delay_transport.h"

#include <algorithm>
#include <cstring>
#include <ctime>

#include "base/assert.h"

namespace ringpeer::ring {

DelayTransport::DelayTransport(std::unique_ptr<Transport> inner, DelayConfig config)
    : inner_(std::move(inner)), config_(std::move(config)) {
  RP_ASSERT(inner_ != nullptr);
  RP_ASSERT(config_.delay_us > 0);
  RP_ASSERT(config_.slots > 0);
  RP_ASSERT(config_.slot_bytes > 0 && config_.slot_bytes % 8 == 0);
  memory_ = std::make_unique<uint64_t[]>(size_t{config_.slots} * config_.slot_bytes / 8);
  held_ = std::make_unique<Held[]>(config_.slots);
}

int64_t DelayTransport::Now() const noexcept {
  if (config_.now_us) return config_.now_us();
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

int64_t DelayTransport::next_due_us() const noexcept {
  return count_ == 0 ? 0 : held_[head_].due_us;
}

std::span<uint8_t> DelayTransport::SendBuffer() noexcept {
  if (count_ == config_.slots) {
    full_++;
    return {};
  }
  const uint32_t tail = (head_ + count_) % config_.slots;
  return {SlotBytes(tail), config_.slot_bytes};
}

void DelayTransport::CommitSend(size_t size, const base::Endpoint& to,
                                int socket_index) noexcept {
  RP_ASSERT(count_ < config_.slots);  // REQUIRES: SendBuffer() returned a slot
  RP_ASSERT(size <= config_.slot_bytes);
  const uint32_t tail = (head_ + count_) % config_.slots;
  Held& h = held_[tail];
  h.due_us = Now() + config_.delay_us;
  h.to = to;
  h.size = static_cast<uint32_t>(size);
  h.socket_index = socket_index;
  count_++;
  delayed_++;
}

bool DelayTransport::Release(int64_t now_us) noexcept {
  bool moved = false;
  // Bounded by the ring's size: each pass takes one datagram off it or stops.
  while (count_ > 0 && held_[head_].due_us <= now_us) {
    const Held& h = held_[head_];
    std::span<uint8_t> out = inner_->SendBuffer();
    if (out.size() < h.size) break;  // inner queue full: keep it (and the order) for later
    std::memcpy(out.data(), SlotBytes(head_), h.size);
    inner_->CommitSend(h.size, h.to, h.socket_index);
    head_ = (head_ + 1) % config_.slots;
    count_--;
    moved = true;
  }
  return moved;
}

size_t DelayTransport::Poll(int64_t timeout_us, std::span<RecvDatagram> out,
                            bool* woken) noexcept {
  const int64_t now = Now();
  if (Release(now)) inner_->Flush();  // io_uring: a no-op; its Poll below submits them
  if (count_ > 0) {
    // Wake in time for the oldest held datagram; the caller loops on its own deadline
    // (Poll may return 0 early), and its next Flush() or Poll() sends it.
    const int64_t until_due = std::max<int64_t>(0, held_[head_].due_us - now);
    if (timeout_us < 0 || until_due < timeout_us) timeout_us = until_due;
  }
  return inner_->Poll(timeout_us, out, woken);
}

void DelayTransport::Flush() noexcept {
  Release(Now());
  inner_->Flush();
}

const TransportStats& DelayTransport::stats() const noexcept {
  stats_ = inner_->stats();
  stats_.send_slots_full += full_;
  stats_.send_delayed = delayed_;
  stats_.send_delay_full = full_;
  return stats_;
}

}  // namespace ringpeer::ring
