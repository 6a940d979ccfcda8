// make_corpus: writes the seed corpus for datagram_fuzzer (one file per message shape).
// Run once when the schemas change: `make_corpus tests/fuzz/corpus/datagram`.
#include <cstdio>
#include <string>
#include <vector>

#include "wire/encode.h"
#include "wire/message.h"

using namespace ringpeer;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  wire::InitCrypto();
  const std::string dir = argv[1];
  wire::Encoder enc;
  alignas(8) uint8_t buf[wire::kDatagramBytesMax];
  auto save = [&](const char* name, size_t n) {
    FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
    if (f == nullptr) return false;
    std::fwrite(buf, 1, n, f);
    std::fclose(f);
    return true;
  };
  wire::KeyPair kp = wire::KeyPair::FromSeed({7});
  wire::NodeId id = wire::NodeIdOf(kp.public_key);
  wire::Hash256 challenge{};
  challenge[0] = 9;
  bool ok = save("ping", enc.Ping(buf, 0, 0x100, id, nullptr));
  ok &= save("ping_challenge", enc.Ping(buf, 1, 0x200, id, &challenge));
  wire::Signature sig = wire::Sign(kp.secret_key, wire::PongSigningBytes(challenge));
  base::Endpoint me = *base::Endpoint::Parse("127.0.0.1:7700");
  ok &= save("pong", enc.Pong(buf, 0, 0x100, id, me, nullptr, nullptr));
  ok &= save("pong_proof", enc.Pong(buf, 0, 0x300, id, me, &kp.public_key, &sig));
  std::vector<wire::PeerInfo> peers;
  for (int i = 0; i < 3; ++i) {
    peers.push_back({id, *base::Endpoint::Parse("[2001:db8::" + std::to_string(i + 1) + "]:7700")});
  }
  ok &= save("peers", enc.Peers(buf, 0, 0x400, id, peers));
  // Pieces of a long update (types 75/76) for a room this node does not serve: the first
  // piece, the last (short) one, and a piece get for every piece.
  wire::Hash256 room{};
  room[0] = 0x52;
  wire::Hash256 update{};
  update[0] = 0x75;
  std::vector<uint8_t> record(wire::kRoomRecordBytesMax + wire::kRoomPieceBytes + 100, 0xA5);
  ok &= save("room_update_piece", enc.RoomUpdatePiece(buf, room, update, record, 0));
  ok &= save("room_update_piece_last", enc.RoomUpdatePiece(buf, room, update, record, 2));
  std::vector<uint8_t> missing((wire::kRoomUpdatePiecesMax + 7) / 8, 0xFF);
  ok &= save("room_update_piece_get", enc.RoomUpdatePieceGet(buf, room, update, missing));
  // Issue 17: pieces of a key epoch (up to 192 KiB) and their get, a join by room id
  // (want_genesis) and its genesis answer.
  ok &= save("room_epoch_piece", enc.RoomUpdatePiece(buf, room, update, record, 0, true));
  std::vector<uint8_t> epoch_missing((wire::kRoomKeyEpochPiecesMax + 7) / 8, 0xFF);
  ok &= save("room_epoch_piece_get",
             enc.RoomUpdatePieceGet(buf, room, update, epoch_missing, true));
  ok &= save("room_join_by_id", enc.RoomJoin(buf, room, id, false, {}, true));
  std::vector<uint8_t> genesis(200, 0x47);
  ok &= save("room_genesis", enc.RoomEpoch(buf, room, genesis, true));
  return ok ? 0 : 1;
}
