// libFuzzer target: a node with state, driven through the node core's dispatch (the one
// the shards run).
//
// Each input is a short sequence of datagrams delivered to a two-shard node whose state
// is what only a running node has: a routing table of 200 verified peers, lookups of its
// own in flight (so replies with matching transaction ids get past the first checks), a
// room with 30 updates and a checkpoint that it relays (on shard 1), a member of that room
// in its swarm, the owner's DHT snapshot on shard 1 (issue 14: FindNode, GetProviders and
// Walk that land there are answered there), and the mailbox between the shards (every
// room datagram that lands on shard 0 and every other overlay datagram that lands on
// shard 1 crosses it, as do the snapshots and their hand-back). The datagrams go
// through NodeCore::Receive, the same header check, rate limit, Verifier and hand-off that
// every shard runs, then mail is delivered, storage committed, and time may advance.
//
// Every input starts from the same state, rebuilt per input without signing (the room is
// restored from an in-memory store prepared once; peers are admitted without the
// challenge), so a saved crashing input reproduces with the same binary.
//
// Input format, repeated up to kRecordsMax times:
//   [selector u8][length u16 LE][datagram bytes]
//   selector bit 0: shard (0 or 1); bits 1-3: source address (kSources below);
//   bit 4: advance 60 ms and tick; bit 5: advance 3 s (timeouts) and tick.
//
// Invariants (besides ASan/UBSan): every datagram the node sends decodes as one we would
// accept and fits 1200 bytes, and one received datagram makes at most a bounded number
// of sends.
//
// RINGPEER_FUZZ_WRITE_SEEDS=DIR: write seed inputs made from the node's own traffic (its
// requests in flight answered, the room's messages for its real room id) to DIR and exit.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "base/assert.h"
#include "dht/overlay.h"
#include "node/room/reducer.h"
#include "node/room/records.h"
#include "node/room/room.h"
#include "node/room/storage.h"
#include "node/core/node_core.h"
#include "node/core/testing.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/message.h"

namespace {

using namespace ringpeer;

constexpr int64_t kStartUs = 1'000'000'000;
constexpr size_t kRecordsMax = 16;
constexpr uint32_t kTablePeers = 200;
constexpr int kSendsPerDatagramMax = 64;

base::Endpoint Ep(const char* s) { return *base::Endpoint::Parse(s); }

// The room, made once per process (this is where the signatures are paid).
struct RoomTemplate {
  wire::KeyPair admin = wire::KeyPair::FromSeed({11});
  wire::KeyPair member = wire::KeyPair::FromSeed({12});
  std::vector<uint8_t> genesis;
  room::Hash256 room_id{};
  std::vector<uint8_t> epoch0;
  std::vector<std::vector<uint8_t>> updates;  // stored
  std::vector<uint8_t> fresh_update;          // valid, not stored: a publish to accept
  std::vector<uint8_t> long_update;           // valid, not stored, child of fresh_update:
                                              // 3 RoomUpdatePiece datagrams
  room::Hash256 long_id{};
  room::Checkpoint checkpoint;
  room::MemoryRoomStorage storage;            // shard 1's store, copied per input
  base::Rng rng{99};

  RoomTemplate() {
    auto random = [this](std::span<uint8_t> out) { rng.Fill(out); };
    // The room must belong to shard 1 of 2 (room_id[0] odd), so traffic for it that lands
    // on shard 0 crosses the mailbox.
    for (uint8_t salt = 0;; ++salt) {
      room::Hash256 s{};
      s[0] = salt;
      genesis = room::MakeGenesis(admin, "fuzz", room::ReducerKind::kChat,
                                  room::kStateBytesMaxDefault, s);
      room::Genesis g;
      RP_ASSERT(room::ParseGenesis(genesis, &g) == room::Verdict::kOk);
      room_id = g.room_id;
      if (room_id[0] % 2 == 1) break;
      RP_ASSERT(salt < 64);
    }
    room::KeyEpochSpec spec;
    spec.room_id = room_id;
    spec.epoch = 0;
    rng.Fill(spec.write_seed);
    rng.Fill(spec.content_key);
    spec.members = {{member.public_key, true}};
    epoch0 = room::MakeKeyEpoch(admin, spec, random);
    auto writer = room::Room::Open(genesis, &member);
    RP_ASSERT(writer.ok());
    RP_ASSERT((*writer)->AddKeyEpoch(epoch0) == room::Verdict::kOk);
    RP_ASSERT(storage.PutGenesis(room_id, genesis).ok());
    RP_ASSERT(storage.PutKeyEpoch(room_id, 0, epoch0).ok());
    for (int i = 0; i < 31; ++i) {
      auto rec = (*writer)->Write(
          room::ChatPayload(room::ChatOp::kMessage, member.public_key,
                            "message " + std::to_string(i)),
          random);
      RP_ASSERT(rec.ok());
      if (i == 30) {
        fresh_update = *rec;
        auto longer = (*writer)->Write(
            room::ChatPayload(room::ChatOp::kMessage, member.public_key, std::string(2500, 'l')),
            random);
        RP_ASSERT(longer.ok());
        long_update = *longer;
        RP_ASSERT(long_update.size() > wire::kRoomRecordBytesMax);
        room::UpdateView lv;
        RP_ASSERT(room::DecodeUpdate(long_update, room_id, &lv) == room::Verdict::kOk);
        long_id = lv.id;
        break;
      }
      updates.push_back(*rec);  // Write applied it to the writer's log already
      room::UpdateView v;
      RP_ASSERT(room::DecodeUpdate(*rec, room_id, &v) == room::Verdict::kOk);
      RP_ASSERT(storage.Append(room_id, v.id, *rec).ok());
      if (i == 19) {
        auto cp = (*writer)->MakeCheckpoint(random);
        RP_ASSERT(cp.ok());
        checkpoint = *cp;
        RP_ASSERT(storage.PutCheckpoint(room_id, cp->record, cp->blob).ok());
      }
    }
    RP_ASSERT(storage.Commit().ok());
  }
};

// Source addresses a datagram may come from: peers in the table (answering our requests),
// the room member, strangers (one IPv6).
constexpr int kSources = 8;

struct World {
  wire::KeyPair identity = wire::KeyPair::FromSeed({7});
  room::MemoryRoomStorage store0;
  room::MemoryRoomStorage store1;
  std::unique_ptr<core::testing::LocalNode> node;
  core::testing::CaptureSink* t[2] = {nullptr, nullptr};
  base::Endpoint sources[kSources];
  std::vector<wire::NodeId> peer_ids;
  std::vector<base::Endpoint> peer_addrs;
  int64_t now = kStartUs;

  World(const RoomTemplate& rt, bool log) : store1(rt.storage) {
    std::vector<core::CoreConfig> configs;
    for (uint32_t i = 0; i < 2; ++i) {
      core::CoreConfig c;
      c.index = i;
      c.shards = 2;
      c.rate_limit_entries = 256;
      c.rooms_max = 8;
      c.overlay.peers_max = 256;
      // 256 provider records, not 4,096: the store and the owner's two snapshots of it
      // are rebuilt per input (1.5 MB under ASan at the default), and no input announces
      // more than a few keys.
      c.overlay.providers.records_max = 256;
      c.room_storage = i == 0 ? &store0 : &store1;
      c.rng_seed = 1000 + i;
      c.start_us = kStartUs;
      configs.push_back(c);
    }
    node = std::make_unique<core::testing::LocalNode>(configs, identity);
    for (int i = 0; i < 2; ++i) {
      t[i] = &node->sink(i);
      t[i]->log = log;
    }
    RP_ASSERT(node->core(1).RestoreRooms().ok());
    // The table: 200 verified peers in many /24s (public-looking addresses), admitted
    // without signatures. The first few live on loopback so they can be sources.
    dht::Overlay* o = node->core(0).overlay();
    base::Outbox& out0 = node->core(0).outbox();
    for (uint32_t i = 0; i < kTablePeers; ++i) {
      wire::NodeId id{};
      const uint32_t x = i * 2654435761u + 17;
      std::memcpy(id.data(), &x, sizeof(x));
      id[31] = static_cast<uint8_t>(i);
      id[4] = static_cast<uint8_t>(i * 37);
      char addr[64];
      if (i < 4) {
        std::snprintf(addr, sizeof(addr), "127.0.0.%u:7700", 10 + i);
      } else {
        std::snprintf(addr, sizeof(addr), "%u.%u.%u.9:7700", 20 + i % 180, (i * 7) % 250,
                      (i * 13) % 250);
      }
      const base::Endpoint ep = Ep(addr);
      if (o->AdmitVerifiedForTesting(now, id, ep, out0)) {
        peer_ids.push_back(id);
        peer_addrs.push_back(ep);
      }
    }
    // The owner's first tick publishes its snapshot to shard 1 (the mail is delivered).
    Step(true);
    // Requests of our own in flight: a lookup, a provider lookup, an announce. The peers
    // they went to are sources 0-2 and 7, so that their answers can come back.
    t[0]->log = true;
    t[0]->captured.clear();
    wire::NodeId target{};
    target[0] = 0x5A;
    o->FindNode(now, target, out0);
    o->GetProviders(now, rt.room_id, out0);
    wire::NodeId key{};
    key[0] = 0xA5;
    o->Announce(now, key, out0);
    Step(false);
    int asked = 0;
    const int request_sources[] = {0, 1, 2, 7};
    for (const core::testing::CaptureSink::Sent& s : t[0]->captured) {
      bool seen = false;
      for (int k = 0; k < asked; ++k) seen |= sources[request_sources[k]] == s.to;
      if (!seen && asked < 4) sources[request_sources[asked++]] = s.to;
    }
    for (int k = asked; k < 4; ++k) sources[request_sources[k]] = peer_addrs[k];
    sources[3] = Ep("127.0.0.20:7701");  // the room member
    sources[4] = Ep("127.0.0.21:7702");
    sources[5] = Ep("127.0.0.22:7703");
    sources[6] = Ep("[::1]:7704");
    t[0]->log = log;
    if (!log) t[0]->captured.clear();
    // The member joins the room: the room now has a swarm peer to flood to.
    alignas(8) uint8_t buf[wire::kDatagramBytesMax];
    wire::Encoder enc;
    const size_t n = enc.RoomJoin(buf, rt.room_id, wire::NodeIdOf(rt.member.public_key), false);
    Deliver(1, sources[3], buf, n);
  }

  void Step(bool tick) { node->Step(now, tick); }

  void Deliver(int shard, const base::Endpoint& from, const uint8_t* data, size_t size) {
    const int before = node->sent();
    node->Receive(shard, now, from, std::span<const uint8_t>(data, size));
    RP_ASSERT(node->sent() - before <= kSendsPerDatagramMax);
  }
};

RoomTemplate* g_room = nullptr;

// --- Seeds: the node's own traffic, answered.
struct SeedWriter {
  std::string dir;
  int n = 0;
  void Write(const std::vector<uint8_t>& input, const char* name) {
    const std::string path = dir + "/" + name + "-" + std::to_string(n++);
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
  }
};

void Append(std::vector<uint8_t>* input, uint8_t selector, const uint8_t* d, size_t n) {
  input->push_back(selector);
  input->push_back(static_cast<uint8_t>(n));
  input->push_back(static_cast<uint8_t>(n >> 8));
  input->insert(input->end(), d, d + n);
}

int SourceIndexOf(const World& w, const base::Endpoint& to) {
  for (int i = 0; i < kSources; ++i) {
    if (w.sources[i] == to) return i;
  }
  return -1;
}

void WriteSeeds(const std::string& dir) {
  SeedWriter out{dir};
  World w(*g_room, /*log=*/true);
  const RoomTemplate& rt = *g_room;
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  const wire::NodeId stranger = wire::NodeIdOf(wire::KeyPair::FromSeed({77}).public_key);
  auto one = [&](int shard, int src, size_t n, const char* name) {
    std::vector<uint8_t> in;
    Append(&in, static_cast<uint8_t>(shard | (src << 1)), buf, n);
    out.Write(in, name);
  };
  // Requests, at both shards, with counts at 0, 1, the maximum and past it.
  // (The encoder refuses counts past the maximum; the fuzzer's mutations make those.)
  for (size_t count : {size_t{0}, size_t{1}, wire::kNodesPerMessageMax}) {
    wire::NodeId target{};
    target[1] = static_cast<uint8_t>(count);
    const auto c = static_cast<uint8_t>(count);
    one(0, 4, enc.FindNode(buf, wire::kNoShardHint, 0x100, stranger, target, c, 0), "find_node");
    one(1, 4, enc.FindNode(buf, wire::kNoShardHint, 0x100, stranger, target, c, 0), "find_node");
  }
  for (size_t count : {size_t{0}, size_t{1}, wire::kProvidersPerMessageMax}) {
    const auto c = static_cast<uint8_t>(count);
    one(0, 4, enc.GetProviders(buf, wire::kNoShardHint, 0x200, stranger, rt.room_id, c, 0),
        "get_providers");
  }
  one(0, 5, enc.Ping(buf, wire::kNoShardHint, 0x300, stranger, nullptr), "ping");
  wire::Hash256 challenge{};
  challenge[3] = 9;
  one(1, 5, enc.Ping(buf, wire::kNoShardHint, 0x300, stranger, &challenge), "ping_challenge");
  one(0, 4, enc.Walk(buf, wire::kNoShardHint, 0x400, stranger, &w.peer_ids[2]), "walk");
  one(0, 4, enc.DumpRequest(buf, wire::kNoShardHint, 0x500, stranger), "dump");
  // Answers to our requests in flight, from the peers they went to.
  for (const core::testing::CaptureSink::Sent& s : w.t[0]->captured) {
    const int src = SourceIndexOf(w, s.to);
    wire::Message m;
    if (src < 0 || wire::Decode(s.bytes.data(), s.bytes.size(), &m) != wire::Verdict::kOk) continue;
    wire::PeerInfo list[20];
    for (size_t i = 0; i < 20; ++i) list[i] = wire::PeerInfo{w.peer_ids[10 + i], w.peer_addrs[10 + i]};
    wire::NodeId from_id{};
    for (size_t i = 0; i < w.peer_addrs.size(); ++i) {
      if (w.peer_addrs[i] == s.to) from_id = w.peer_ids[i];
    }
    if (m.type() == wire::MessageType::kFindNode) {
      const uint64_t tx = m.find_node()->txid();
      one(0, src, enc.Nodes(buf, static_cast<uint32_t>(tx & 0xFF), tx, from_id, list), "nodes");
      one(1, src, enc.Nodes(buf, static_cast<uint32_t>(tx & 0xFF), tx, from_id, {}), "nodes_empty");
    } else if (m.type() == wire::MessageType::kGetProviders) {
      const uint64_t tx = m.get_providers()->txid();
      wire::Token token{};
      one(0, src, enc.Providers(buf, static_cast<uint32_t>(tx & 0xFF), tx, from_id, token,
                                std::span(list, 3), std::span(list + 3, wire::kProviderNodesPerMessageMax)),
          "providers");
    } else if (m.type() == wire::MessageType::kPing) {
      const uint64_t tx = m.ping()->txid();
      one(0, src, enc.Pong(buf, static_cast<uint32_t>(tx & 0xFF), tx, from_id, w.sources[src],
                           nullptr, nullptr),
          "pong");
    }
  }
  // Room messages for the room the node serves, from the member, at both shards.
  const wire::NodeId member_id = wire::NodeIdOf(rt.member.public_key);
  for (int shard : {0, 1}) {
    one(shard, 3, enc.RoomJoin(buf, rt.room_id, member_id, false), "room_join");
    one(shard, 4, enc.RoomJoin(buf, rt.room_id, stranger, true, rt.genesis), "room_join_genesis");
    one(shard, 3, enc.RoomPublish(buf, rt.room_id, rt.fresh_update), "room_publish");
    one(shard, 3, enc.RoomPublish(buf, rt.room_id, rt.updates[25]), "room_publish_dup");
    one(shard, 3, enc.RoomSync(buf, rt.room_id, 0x900, 16, {}), "room_sync_empty");
    room::UpdateView v;
    RP_ASSERT(room::DecodeUpdate(rt.updates[22], rt.room_id, &v) == room::Verdict::kOk);
    const room::Hash256 head = v.id;
    one(shard, 3, enc.RoomSync(buf, rt.room_id, 0x901, 0, std::span(&head, 1)), "room_sync_window0");
    one(shard, 3, enc.RoomSync(buf, rt.room_id, 0x902, 0xFFFF, std::span(&head, 1)), "room_sync");
    // Naming the checkpoint the relay holds (the log after it), and one it does not hold.
    const room::Hash256 held_cp = wire::Blake2b256(rt.checkpoint.record);
    one(shard, 3, enc.RoomSync(buf, rt.room_id, 0x905, 64, std::span(&head, 1), &held_cp),
        "room_sync_checkpoint");
    const room::Hash256 other_cp = v.id;
    one(shard, 3, enc.RoomSync(buf, rt.room_id, 0x906, 64, {}, &other_cp),
        "room_sync_other_checkpoint");
    one(shard, 3, enc.RoomAck(buf, rt.room_id, head), "room_ack");
    // Packed (issue 15): three records, one new and two the relay holds; three acks.
    const room::Bytes packed[3] = {rt.fresh_update, rt.updates[25], rt.updates[1]};
    one(shard, 3, enc.RoomPublishPacked(buf, rt.room_id, packed), "room_publish_packed");
    const room::Hash256 acked[3] = {head, v.id, rt.long_id};
    one(shard, 3, enc.RoomAckPacked(buf, rt.room_id, acked), "room_ack_packed");
    one(shard, 3, enc.RoomEpoch(buf, rt.room_id, rt.epoch0), "room_epoch");
    one(shard, 3, enc.RoomSlowDown(buf, rt.room_id, head, 0), "room_slow_down");
    one(shard, 3, enc.RoomLeave(buf, rt.room_id, member_id), "room_leave");
    room::CheckpointInfo ci;
    room::Bytes signed_bytes;
    room::Signature sig;
    if (room::DecodeCheckpoint(rt.checkpoint.record, rt.room_id, &ci, &signed_bytes, &sig) ==
        room::Verdict::kOk) {
      for (uint32_t index : {0u, 1u, 0xFFFFFFFFu}) {
        one(shard, 3, enc.RoomCheckpointGet(buf, rt.room_id, ci.id, 0, index), "room_cp_get");
      }
      // Ranges (issue 15): answered as a burst, cut by the sink.
      one(shard, 3, enc.RoomCheckpointGet(buf, rt.room_id, ci.id, 0, 0, wire::kRoomPieceRangeMax),
          "room_cp_get_range");
      one(shard, 3, enc.RoomCheckpointGet(buf, rt.room_id, ci.id, 1, 0, 3), "room_cp_get_range_top");
      one(shard, 3, enc.RoomCheckpointChunk(buf, rt.room_id, ci.id, 0, 0,
                                            std::span(rt.checkpoint.blob).first(
                                                std::min<size_t>(rt.checkpoint.blob.size(), 800))),
          "room_cp_chunk");
    }
    wire::RoomHeadsFields h;
    h.room = rt.room_id;
    h.sender = member_id;
    h.epoch = 0;
    h.log_size = 40;
    h.heads = std::span(&head, 1);
    one(shard, 3, enc.RoomHeads(buf, h), "room_heads");
    const room::Bytes recs[2] = {rt.updates[1], rt.fresh_update};
    one(shard, 3, enc.RoomSyncData(buf, rt.room_id, 0x903, 0, 2, false, false, {}, recs),
        "room_sync_data");
    // Pieces of a long update (types 75/76): the first, a middle and the last piece; a
    // piece get for every piece, for none, and with bits past the last piece set.
    const uint16_t pieces = static_cast<uint16_t>(
        (rt.long_update.size() + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes);
    for (uint16_t index : {uint16_t{0}, uint16_t{1}, static_cast<uint16_t>(pieces - 1)}) {
      one(shard, 3, enc.RoomUpdatePiece(buf, rt.room_id, rt.long_id, rt.long_update, index),
          "room_update_piece");
    }
    for (uint8_t bits : {uint8_t{0xFF}, uint8_t{0x00}, uint8_t{0xF8}}) {
      uint8_t missing[(wire::kRoomUpdatePiecesMax + 7) / 8];
      std::memset(missing, bits, sizeof missing);
      one(shard, 3, enc.RoomUpdatePieceGet(buf, rt.room_id, rt.long_id,
                                           room::Bytes(missing, bits == 0xF8 ? 1 : sizeof missing)),
          "room_update_piece_get");
    }
    // Issue 17: a key epoch's pieces (here bytes that are no epoch: the sender is refused),
    // a piece get for them, a join by room id (want_genesis) and a genesis answer.
    const room::Hash256 epoch_id = wire::Blake2b256(rt.long_update);
    for (uint16_t index : {uint16_t{0}, static_cast<uint16_t>(pieces - 1)}) {
      one(shard, 3, enc.RoomUpdatePiece(buf, rt.room_id, epoch_id, rt.long_update, index,
                                        /*key_epoch=*/true),
          "room_epoch_piece");
    }
    {
      uint8_t missing[(wire::kRoomKeyEpochPiecesMax + 7) / 8];
      std::memset(missing, 0xFF, sizeof missing);
      one(shard, 3, enc.RoomUpdatePieceGet(buf, rt.room_id, epoch_id,
                                           room::Bytes(missing, sizeof missing), true),
          "room_epoch_piece_get");
    }
    one(shard, 3, enc.RoomJoin(buf, rt.room_id, member_id, false, {}, /*want_genesis=*/true),
        "room_join_by_id");
    one(shard, 3, enc.RoomEpoch(buf, rt.room_id, rt.genesis, /*genesis=*/true), "room_genesis");
  }
  // A sequence: join, publish, tick, sync, timeouts.
  std::vector<uint8_t> seq;
  size_t n = enc.RoomJoin(buf, rt.room_id, member_id, false);
  Append(&seq, 1 | (3 << 1), buf, n);
  n = enc.RoomPublish(buf, rt.room_id, rt.fresh_update);
  Append(&seq, 0 | (3 << 1) | 0x10, buf, n);
  n = enc.RoomSync(buf, rt.room_id, 0x904, 64, {});
  Append(&seq, 1 | (3 << 1) | 0x20, buf, n);
  out.Write(seq, "sequence");
  // A long update whole, after its parent: every piece, the last one twice.
  std::vector<uint8_t> pieces_seq;
  n = enc.RoomJoin(buf, rt.room_id, member_id, false);
  Append(&pieces_seq, 1 | (3 << 1), buf, n);
  n = enc.RoomPublish(buf, rt.room_id, rt.fresh_update);
  Append(&pieces_seq, 1 | (3 << 1), buf, n);
  const size_t long_pieces =
      (rt.long_update.size() + wire::kRoomPieceBytes - 1) / wire::kRoomPieceBytes;
  for (size_t i = 0; i <= long_pieces; ++i) {
    const uint16_t index = static_cast<uint16_t>(std::min(i, long_pieces - 1));
    n = enc.RoomUpdatePiece(buf, rt.room_id, rt.long_id, rt.long_update, index);
    Append(&pieces_seq, 1 | (3 << 1), buf, n);
  }
  out.Write(pieces_seq, "sequence_pieces");
  // Raw datagrams captured between real nodes (RINGPEER_FUZZ_RAW_SEEDS: a directory, one
  // datagram a file), each wrapped as a one-record input, alternating shards and sources.
  if (const char* raw = std::getenv("RINGPEER_FUZZ_RAW_SEEDS")) {
    std::error_code ec;
    int k = 0;
    for (const auto& entry : std::filesystem::directory_iterator(raw, ec)) {
      std::ifstream f(entry.path(), std::ios::binary);
      std::vector<uint8_t> d((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (d.empty() || d.size() > 0xFFFF) continue;
      std::vector<uint8_t> in;
      Append(&in, static_cast<uint8_t>((k & 1) | (((k >> 1) % kSources) << 1)), d.data(), d.size());
      out.Write(in, "captured");
      ++k;
    }
  }
  std::fprintf(stderr, "node_fuzzer: wrote %d seeds to %s\n", out.n, dir.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  RP_ASSERT(wire::InitCrypto());
  g_room = new RoomTemplate();
  if (const char* dir = std::getenv("RINGPEER_FUZZ_WRITE_SEEDS")) {
    WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World w(*g_room, /*log=*/false);
  size_t at = 0;
  for (size_t r = 0; r < kRecordsMax && size - at >= 3; ++r) {
    const uint8_t sel = data[at];
    const size_t len = std::min<size_t>(data[at + 1] | size_t{data[at + 2]} << 8, size - at - 3);
    const uint8_t* d = data + at + 3;
    at += 3 + len;
    if (sel & 0x10) w.now += 60'000;
    if (sel & 0x20) w.now += 3'000'000;
    w.Deliver(sel & 1, w.sources[(sel >> 1) & 7], d, len);
    if (sel & 0x30) w.Step(true);
  }
  return 0;
}
