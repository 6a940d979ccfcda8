// Transport: the seam between a shard and the kernel's UDP sockets.
//
// A shard is written against this small interface (DESIGN.md section 2): production uses
// the io_uring transport (ring/uring_transport.h) or, where io_uring is unavailable, the
// recvmmsg/sendmmsg one (ring/mmsg_transport.h); tests may use an in-memory one.
//
// One loop iteration of a shard is:
//   n = Poll(timeout, batch)      // submit what is queued, wait, fill up to batch.size()
//   ... handle batch[0..n), building replies with SendBuffer()/CommitSend() ...
//   ReleaseReceived()             // give the receive buffers back
//   Flush()                       // hand the queued sends to the kernel (may be deferred
//                                 // into the next Poll's single syscall)
// Everything is sized at construction; nothing allocates after it.
//
// Thread-safety: a Transport belongs to one shard thread. The only thing another thread
// may touch is its WakeHandle (immutable after construction), which it passes to its own
// transport's QueueWake().
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/endpoint.h"
#include "base/outbox.h"

namespace ringpeer::ring {

// Received datagram, borrowed from the transport until ReleaseReceived().
// `data + 16` is 8-byte aligned (the FlatBuffers Verifier checks alignment).
struct RecvDatagram {
  const uint8_t* data = nullptr;
  uint32_t size = 0;
  uint16_t socket_index = 0;  // which of the shard's sockets it arrived on
  bool truncated = false;     // larger than the buffer: the caller drops it as too long
  base::Endpoint from;
};

// How another shard wakes this one: an io_uring ring fd (MSG_RING) or an eventfd.
// An io_uring transport fills both (MSG_RING from another ring; the eventfd for a
// recvmmsg transport, which has no ring); a recvmmsg transport fills only event_fd.
struct WakeHandle {
  int ring_fd = -1;
  int event_fd = -1;
};

// Counters a transport keeps about itself. Owned by the shard thread; the shard publishes
// them. Monotonic.
struct TransportStats {
  uint64_t received = 0;          // datagrams handed to the shard
  uint64_t sent = 0;              // send completions that succeeded
  uint64_t send_errors = 0;       // send completions that failed (ICMP errors, ENOBUFS)
  uint64_t send_slots_full = 0;   // SendBuffer() found no free slot
  uint64_t recv_no_buffers = 0;   // the kernel had no provided buffer (receive dropped)
  uint64_t recv_truncated = 0;    // datagram larger than a buffer
  uint64_t recv_rearms = 0;       // multishot receive re-armed after it stopped
  uint64_t wakeups = 0;           // doorbells received
  uint64_t syscalls = 0;          // submit/wait (or recvmmsg/sendmmsg/poll) calls made
  uint64_t completions = 0;       // io_uring: CQEs reaped (receives, sends, wakes); mmsg: 0
  uint64_t recv_ring_grown = 0;   // io_uring: the buffer ring's level doubled (a burst)
  uint64_t send_fallbacks = 0;    // io_uring: switched from send-with-address to sendmsg
  uint64_t quiet_waits = 0;       // io_uring: Poll waited again after only send completions
  uint64_t bursts = 0;            // burst sends handed to the kernel (one per peer per burst)
  uint64_t burst_fallbacks = 0;   // bursts turned off: the kernel or device refused one
  // io_uring with recv_gro: receives that carried a burst of several datagrams (UDP GRO),
  // and datagrams of such receives dropped (a partial last one, or more than Poll's batch
  // could take: a sender that cut its burst finer than ours do).
  uint64_t recv_coalesced = 0;
  uint64_t recv_coalesced_dropped = 0;
  // Test delay shim only (TransportConfig::send_delay_us > 0, ring/delay_transport.h).
  uint64_t send_delayed = 0;      // datagrams held for the delay
  uint64_t send_delay_full = 0;   // dropped: the delay queue was full (also in send_slots_full)
};

struct TransportConfig {
  // Receive buffers per shard. With the default 4096 x 2048 B = 8 MiB per shard: enough
  // for a full loopback burst at ~700k datagrams/s between two loop iterations.
  uint32_t recv_buffers = 4096;      // power of two (buffer ring requirement)
  uint32_t recv_buffer_bytes = 2048; // header + sockaddr + 1200 B payload, rounded up
  // io_uring: how many of them the kernel's buffer ring holds at least (it grows towards
  // recv_buffers under bursts; see UringTransport::spare_). Fewer buffers in the ring
  // keep the ones the kernel writes into hot in cache.
  uint32_t recv_ring_level_min = 256;
  // Send slots: datagrams queued but not yet completed by the kernel. 4096 x 1280 B =
  // 5 MiB per shard. A relay sends ~9 datagrams per update it fans out to 8 members: with
  // 2048 slots a burst of a few hundred updates overflowed the queue and lost acks (the
  // room loopback benchmark: ~1,000 retransmissions per 20,000 updates; none with 4096).
  uint32_t send_slots = 4096;
  uint32_t send_slot_bytes = 1280;   // >= kDatagramBytesMax, 8-byte multiple
  // Burst buffers (UDP GSO; Transport::BurstBuffer): base::kBurstBytesMax each, allocated
  // at start (io_uring: mapped and prefaulted, like the send slots). 32 x 48,000 B =
  // 1.5 MiB per shard. 0: no bursts.
  uint32_t burst_buffers = 32;
  // io_uring: receive with UDP GRO (issue 15). The kernel then hands over a burst from one
  // sender (a GSO send on loopback, or what a NIC's GRO joined) as one receive, and the
  // transport hands its datagrams out one by one from that buffer: a checkpoint range of
  // 32 pieces costs the receiver one wakeup and one copy instead of 32 (loopback:
  // ~0.2 instead of ~1.8 us per datagram, bench/udp_gro.cc). Each receive buffer must then
  // hold a whole burst: gro_buffers buffers of UringTransport::kGroBufferBytes (~65 KiB;
  // 128 x 65 KiB = 8.5 MB, about the memory of the default 4096 x 2 KiB) replace
  // recv_buffers x recv_buffer_bytes, so a flood of small datagrams finds fewer buffers
  // (the rest wait in the socket until Poll re-arms). Clients turn it on (they fetch
  // checkpoints); relays keep it off unless asked (`ringpeer serve --recv-gro on`). A
  // kernel without UDP_GRO (before 5.0) keeps the ordinary buffers, and the recvmmsg
  // transport ignores it: both receive datagram by datagram as before.
  bool recv_gro = false;
  uint32_t gro_buffers = 128;        // power of two
  // Submission queue entries; >= send_slots + sockets + a few for wakes and timers.
  uint32_t sq_entries = 8192;
  // Pin the calling thread's transport work to this CPU for SQPOLL-free setups (-1: none).
  // io_uring: the ring's async workers (io-wq, used only for rare punted work) are bound
  // to this CPU. The shard pins its own thread.
  int cpu = -1;
  // io_uring: register the sockets as fixed files, which saves a file lookup and reference
  // count per operation. Off is for measuring the difference.
  bool register_files = true;
  // io_uring: send each datagram as IORING_OP_SEND with its address, no msghdr to copy. A
  // kernel that refuses the address makes the transport fall back to sendmsg by itself
  // (TransportStats::send_fallbacks); false starts with sendmsg (tests, measurements).
  bool send_with_address = true;
  // io_uring: a send posts a completion only when it fails (IOSQE_CQE_SKIP_SUCCESS with
  // MSG_DONTWAIT, so it ends inside the io_uring_enter that submits it): half the
  // completions per answered datagram, and a wait is never ended by our own sends. False
  // keeps a completion per send (tests, measurements).
  bool skip_send_completions = true;
  // io_uring (kernel 6.12+): a wait for datagrams lasts at least this long once started
  // (unless kCoalesceWaitNr completions come first), so that one wakeup serves several
  // datagrams at light load. 0: wake for each. Adds up to this much latency.
  uint32_t coalesce_us = 0;
  // Test only (`ringpeer serve --test-delay-ms`, tests/netns): hold every outgoing
  // datagram this long before sending it, to stand in for link delay where the kernel
  // has no netem. 0: off, and the transport is not wrapped at all. When > 0,
  // CreateTransport wraps the transport in a DelayTransport (ring/delay_transport.h)
  // holding at most send_delay_slots datagrams (send_slot_bytes each); beyond that,
  // sends are dropped and counted in send_slots_full.
  int64_t send_delay_us = 0;
  uint32_t send_delay_slots = 4096;
};

// Which transport to use. kAuto prefers io_uring and falls back to recvmmsg with a
// reason; kIoUring makes an unavailable io_uring an error.
enum class TransportKind : uint8_t { kAuto, kIoUring, kMmsg };

class Transport {
 public:
  virtual ~Transport() = default;
  Transport() = default;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // "io_uring" or "recvmmsg".
  virtual const char* name() const noexcept = 0;

  // Poll: submits queued work, waits up to `timeout_us` (0: don't wait; negative: no
  // limit) for at least one datagram or doorbell, then fills `out` with up to out.size()
  // received datagrams. Returns how many. Sets *woken when a doorbell rang since the last
  // Poll. It may return 0 early (a send completed), so callers loop on their own deadline.
  // The first Poll always reports *woken (a doorbell may have rung before it could be
  // delivered). io_uring: submit and wait are one system call.
  // REQUIRES: ReleaseReceived() was called after the previous Poll.
  virtual size_t Poll(int64_t timeout_us, std::span<RecvDatagram> out, bool* woken) noexcept = 0;

  // ReleaseReceived: returns every buffer handed out by the last Poll to the kernel.
  virtual void ReleaseReceived() noexcept = 0;

  // SendBuffer: a free send slot to build one datagram into, or an empty span when all
  // slots are in flight (the caller drops and counts). The slot is 8-byte aligned.
  virtual std::span<uint8_t> SendBuffer() noexcept = 0;

  // CommitSend: queues the slot from the last SendBuffer() with `size` bytes for `to`,
  // sent from socket `socket_index` (or the first socket of `to`'s family when -1).
  virtual void CommitSend(size_t size, const base::Endpoint& to, int socket_index = -1) noexcept = 0;

  // Bursts (UDP GSO, issue 15; base/outbox.h). BurstBuffer: room for a burst of up to
  // base::kBurstBytesMax bytes, or empty: bursts are off (burst_buffers = 0; a kernel
  // without UDP_SEGMENT; or a burst send failed with EIO or EINVAL, as on a device that
  // cannot checksum them, which turns them off for good: TransportStats::burst_fallbacks;
  // the datagrams of that burst are lost, as UDP may lose them) or all are in flight.
  // The buffer is the caller's from BurstBuffer() until CommitBurst (asked again before
  // that, BurstBuffer() hands out the same one); sends in between do not reuse it.
  // CommitBurst: queues it once for each of `to` (each takes a send slot; without one
  // free, that peer is skipped and counted in send_slots_full); the kernel cuts it into
  // datagrams of `segment` bytes, each counted in `sent`. Returns the datagrams queued.
  // REQUIRES (CommitBurst): BurstBuffer() returned a buffer since the last CommitBurst;
  // size <= base::kBurstBytesMax; 0 < segment <= send_slot_bytes; at most
  // base::kBurstDatagramsMax datagrams; to.size() <= base::kBurstPeersMax.
  virtual std::span<uint8_t> BurstBuffer() noexcept { return {}; }
  virtual size_t CommitBurst(size_t /*size*/, size_t /*segment*/,
                             std::span<const base::Endpoint> /*to*/) noexcept {
    return 0;
  }

  // Flush: hands queued sends to the kernel. io_uring may defer the syscall to the next
  // Poll so that one iteration costs one syscall.
  virtual void Flush() noexcept = 0;

  // wake_handle: how others wake this transport. QueueWake: wake `target` (another
  // shard's transport) once; batched with this transport's next submit.
  virtual WakeHandle wake_handle() const noexcept = 0;
  virtual void QueueWake(const WakeHandle& target) noexcept = 0;

  // The local address of socket `i` (after bind, with the real port for port 0).
  virtual base::Endpoint local_address(size_t i) const noexcept = 0;
  virtual size_t socket_count() const noexcept = 0;

  virtual const TransportStats& stats() const noexcept = 0;

  // Shutdown: releases the port before returning. Submits what is queued (the last
  // sends), cancels every request still in the kernel, waits (bounded) for their
  // completions, unregisters registered files and closes the sockets, so that a node
  // started right after this process exits can bind the same port. Call it from the
  // polling thread (io_uring's single issuer); afterwards only the destructor may run.
  // The destructor does the same if it was not called, as well as it can from there.
  virtual void Shutdown() noexcept = 0;
};

// Bursts' plumbing, shared by the transports (see Transport::BurstBuffer).
// UdpGsoAvailable: whether the kernel takes UDP_SEGMENT on `fd` (Linux 4.18 and later).
bool UdpGsoAvailable(int fd) noexcept;
// BurstControl: the one control message a burst's send carries: its segment size.
struct BurstControl {
  alignas(cmsghdr) uint8_t bytes[CMSG_SPACE(sizeof(uint16_t))];
};
// SetBurstSegment: writes `segment` into `c` as a UDP_SEGMENT control message (a msghdr
// then points msg_control at c->bytes, msg_controllen sizeof(c->bytes)).
void SetBurstSegment(BurstControl* c, uint16_t segment) noexcept;
// BurstRefused: a burst send failed in a way that says bursts do not work here (a device
// that cannot checksum them: EIO; a kernel or path that refuses the segment size:
// EINVAL, EOPNOTSUPP), rather than UDP's ordinary loss.
bool BurstRefused(int err) noexcept;
// SetUdpGro: asks the kernel to hand `fd`'s bursts over whole (UDP_GRO, Linux 5.0), or
// no longer to; false where it refuses (a kernel without the option refuses both). With
// it on, a receive that holds more than one datagram carries a UDP_GRO control message
// with the segment size (an int).
bool SetUdpGro(int fd, bool on) noexcept;
// BurstDatagrams: how many datagrams a burst of `size` bytes cut at `segment` makes.
constexpr uint32_t BurstDatagrams(size_t size, size_t segment) noexcept {
  return static_cast<uint32_t>((size + segment - 1) / segment);
}

// PickSocket: which of a shard's sockets (bound to `addresses`) sends to `to`: the given
// `socket_index` when >= 0, else the first socket of `to`'s family, else (for IPv4) a
// dual-stack [::] socket. -1 when none can.
int PickSocket(std::span<const base::Endpoint> addresses, const base::Endpoint& to,
               int socket_index) noexcept;

// ShardSockets: the bound UDP sockets of one shard, one per listen address. The transport
// takes ownership (closes them).
struct ShardSockets {
  std::vector<int> fds;
  std::vector<base::Endpoint> addresses;  // what each fd is bound to (real port)
};

// BindShardSockets: for each listen address, binds `shards` sockets to the same address
// and port with SO_REUSEPORT, in shard order. A wildcard IPv6 address ([::]) is dual-stack
// (also receives IPv4). Port 0 picks one free port and uses it for every shard. Before
// binding a fixed port, a probe bind without SO_REUSEPORT detects a port that another
// process holds, even another ringpeer (otherwise the kernel would let us share it).
// With `steer`, attaches the reuseport program that picks shard = header byte 8 (the low
// byte of the shard hint) modulo `shards`, or the kernel's hash when that byte is 0xFF.
// Errors: "address already in use", "cannot assign address", etc., as an absl::Status
// naming the address.
absl::StatusOr<std::vector<ShardSockets>> BindShardSockets(
    const std::vector<base::Endpoint>& listen, uint32_t shards, bool steer);

// ProbeIoUring: OK when this process can create an io_uring with what we need (multishot
// recvmsg, provided buffer rings); otherwise Unavailable with one clear sentence naming
// the cause (kernel.io_uring_disabled, a seccomp profile such as Docker's default, or a
// kernel too old).
// The environment variable RINGPEER_TEST_DISABLE_IO_URING=1 makes it report Unavailable,
// so that tests can exercise the recvmmsg fallback and the kIoUring error path.
absl::Status ProbeIoUring();

// CreateTransport: builds the transport of `kind` over `sockets`. With kAuto, an
// unavailable io_uring falls back to recvmmsg and `*fallback_reason` says why (empty
// otherwise). With kIoUring it is an error instead. With config.send_delay_us > 0 the
// result is wrapped in a DelayTransport (a test option; see TransportConfig).
absl::StatusOr<std::unique_ptr<Transport>> CreateTransport(TransportKind kind,
                                                           ShardSockets sockets,
                                                           const TransportConfig& config,
                                                           std::string* fallback_reason);

}  // namespace ringpeer::ring
