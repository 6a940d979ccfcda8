// Goal: what Encoder writes, Decode reads back field for field; what is malformed, Decode
// rejects with the right Verdict. Method: round trips, then targeted corruptions of each
// header field and of the body, then random truncations.
#include "wire/message.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <random>

#include "wire/encode.h"

namespace ringpeer::wire {
namespace {

struct alignas(8) Buf {
  std::array<uint8_t, kDatagramBytesMax + 64> b{};
  uint8_t* data() { return b.data(); }
};

NodeId IdFrom(uint8_t x) {
  NodeId id;
  id.fill(x);
  return id;
}

TEST(Wire, PingRoundTrip) {
  Encoder enc;
  Buf buf;
  Hash256 challenge = IdFrom(7);
  size_t n = enc.Ping(buf.b, 0x01020304, 42, IdFrom(1), &challenge);
  ASSERT_GT(n, kHeaderBytes);
  Message m;
  ASSERT_EQ(Decode(buf.data(), n, &m), Verdict::kOk);
  EXPECT_EQ(m.type(), MessageType::kPing);
  EXPECT_EQ(m.header().shard_hint, 0x01020304u);
  EXPECT_EQ(m.ping()->txid(), 42u);
  EXPECT_EQ(FromWireId(*m.ping()->sender()), IdFrom(1));
  ASSERT_NE(m.ping()->challenge(), nullptr);
  EXPECT_EQ(FromWireId(*m.ping()->challenge()), challenge);
  EXPECT_EQ(m.bytes().size(), n);

  n = enc.Ping(buf.b, kNoShardHint, 43, IdFrom(1), nullptr);
  ASSERT_EQ(Decode(buf.data(), n, &m), Verdict::kOk);
  EXPECT_EQ(m.ping()->challenge(), nullptr);
}

// A burst's datagrams lie back to back, each but the last padded to one segment size:
// rounded up to 8 bytes so that a GRO receiver reads each where it lies (alignment); the
// padding is zeros, counted in each header's body_bytes.
TEST(Wire, PackBurstRoundsTheSegmentToEight) {
  alignas(8) static uint8_t burst[4 * kDatagramBytesMax];
  const size_t sizes[4] = {1001, 1003, 997, 500};
  for (size_t i = 0; i < 4; ++i) {
    for (size_t k = 0; k < sizes[i]; ++k) {
      burst[i * kDatagramBytesMax + k] = static_cast<uint8_t>(i * 31 + k + 1);
    }
  }
  size_t segment = 0;
  const size_t size = PackBurst(burst, sizes, 4, &segment);
  EXPECT_EQ(segment, 1008u);  // 1003 rounded up
  EXPECT_EQ(size, 3 * segment + sizes[3]);
  for (size_t i = 0; i < 4; ++i) {
    const uint8_t* d = burst + i * segment;
    for (size_t k = kHeaderBytes; k < sizes[i]; ++k) {
      ASSERT_EQ(d[k], static_cast<uint8_t>(i * 31 + k + 1)) << i << " " << k;
    }
    if (i == 3) break;  // the last is not padded
    for (size_t k = sizes[i]; k < segment; ++k) ASSERT_EQ(d[k], 0) << i << " " << k;
    EXPECT_EQ(LoadHeader(d).body_bytes, segment - kHeaderBytes) << i;
  }
}

// And a padded datagram still decodes as the one it was.
TEST(Wire, PackedBurstDatagramsStillDecode) {
  Encoder enc;
  alignas(8) static uint8_t burst[4 * kDatagramBytesMax];
  size_t sizes[4];
  for (uint32_t i = 0; i < 4; ++i) {
    Hash256 challenge = IdFrom(static_cast<uint8_t>(i));
    sizes[i] = enc.Ping(std::span<uint8_t>(burst + i * kDatagramBytesMax, kDatagramBytesMax),
                        i, 100 + i, IdFrom(1), i % 2 == 0 ? &challenge : nullptr);
  }
  size_t segment = 0;
  PackBurst(burst, sizes, 4, &segment);
  EXPECT_EQ(segment % 8, 0u);
  EXPECT_LE(segment, kDatagramBytesMax);
  for (uint32_t i = 0; i < 4; ++i) {
    Message m;
    const size_t n = i < 3 ? segment : sizes[3];
    ASSERT_EQ(Decode(burst + i * segment, n, &m), Verdict::kOk) << i;
    EXPECT_EQ(m.ping()->txid(), 100 + i);
    EXPECT_EQ(m.ping()->challenge() != nullptr, i % 2 == 0);
  }
}

TEST(Wire, PongRoundTripWithProof) {
  ASSERT_TRUE(InitCrypto());
  KeyPair kp = KeyPair::Generate();
  Hash256 challenge = IdFrom(9);
  auto signing = PongSigningBytes(challenge);
  Signature sig = Sign(kp.secret_key, signing);
  base::Endpoint observed = *base::Endpoint::Parse("[2001:db8::1]:7700");
  Encoder enc;
  Buf buf;
  size_t n = enc.Pong(buf.b, 5, 77, NodeIdOf(kp.public_key), observed, &kp.public_key, &sig);
  Message m;
  ASSERT_EQ(Decode(buf.data(), n, &m), Verdict::kOk);
  const fb::Pong* p = m.pong();
  EXPECT_EQ(p->txid(), 77u);
  EXPECT_EQ(FromWireAddr(*p->observed()), observed);
  ASSERT_NE(p->public_key(), nullptr);
  PublicKey key = FromWireId(*p->public_key());
  EXPECT_EQ(NodeIdOf(key), FromWireId(*p->responder()));
  EXPECT_TRUE(VerifySignature(key, signing, FromWireSig(*p->signature())));
}

TEST(Wire, PeersRoundTrip) {
  Encoder enc;
  Buf buf;
  std::vector<PeerInfo> peers;
  for (int i = 0; i < static_cast<int>(kPeersPerMessageMax); ++i) {
    peers.push_back({IdFrom(static_cast<uint8_t>(i)),
                     *base::Endpoint::Parse("127.0.0." + std::to_string(i + 1) + ":" +
                                            std::to_string(1000 + i))});
  }
  size_t n = enc.Peers(buf.b, 0, 5, IdFrom(200), peers);
  ASSERT_GT(n, 0u);
  EXPECT_LE(n, kDatagramBytesMax);
  Message m;
  ASSERT_EQ(Decode(buf.data(), n, &m), Verdict::kOk);
  ASSERT_EQ(m.peers()->peers()->size(), peers.size());
  for (size_t i = 0; i < peers.size(); ++i) {
    const fb::PeerEntry* e = m.peers()->peers()->Get(static_cast<flatbuffers::uoffset_t>(i));
    EXPECT_EQ(FromWireId(e->id()), peers[i].id);
    EXPECT_EQ(FromWireAddr(e->addr()), peers[i].addr);
  }
}

TEST(Wire, HeaderCorruptionsHaveReasons) {
  Encoder enc;
  Buf good;
  size_t n = enc.Ping(good.b, 0, 1, IdFrom(1), nullptr);
  Message m;
  auto with = [&](auto mutate) {
    Buf b = good;
    size_t len = n;
    mutate(b.data(), &len);
    return Decode(b.data(), len, &m);
  };
  EXPECT_EQ(with([](uint8_t*, size_t* l) { *l = 3; }), Verdict::kTooShort);
  EXPECT_EQ(with([](uint8_t*, size_t* l) { *l = kDatagramBytesMax + 1; }), Verdict::kTooLong);
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[0] ^= 1; }), Verdict::kBadMagic);
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[4] = 2; }), Verdict::kBadVersion);
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[12] += 1; }), Verdict::kBadLength);
  EXPECT_EQ(with([](uint8_t*, size_t* l) { *l -= 1; }), Verdict::kBadLength);
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[14] = 1; }), Verdict::kBadReserved);
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[5] = 0; }), Verdict::kUnknownType);
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[5] = 200; }), Verdict::kUnknownType);
  // A ping body read as a pong: the required fields are missing.
  EXPECT_EQ(with([](uint8_t* p, size_t*) { p[5] = 2; }), Verdict::kVerifyFailed);
}

TEST(Wire, BadFieldsAreRejected) {
  Encoder enc;
  Buf buf;
  base::Endpoint bad;  // family none
  size_t n = enc.Pong(buf.b, 0, 1, IdFrom(1), bad, nullptr, nullptr);
  Message m;
  EXPECT_EQ(Decode(buf.data(), n, &m), Verdict::kBadField);
}

TEST(Wire, RandomTruncationsAndFlipsNeverCrash) {
  Encoder enc;
  Buf good;
  std::vector<PeerInfo> peers(3, PeerInfo{IdFrom(3), *base::Endpoint::Parse("1.2.3.4:5")});
  size_t n = enc.Peers(good.b, 0, 5, IdFrom(2), peers);
  std::mt19937 rng(1234);
  int ok = 0;
  for (int i = 0; i < 20000; ++i) {
    Buf b = good;
    size_t len = kHeaderBytes + rng() % (n - kHeaderBytes + 1);
    int flips = static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b.b[kHeaderBytes + rng() % (n - kHeaderBytes)] ^= rng() & 0xff;
    uint16_t body = static_cast<uint16_t>(len - kHeaderBytes);
    std::memcpy(b.data() + 12, &body, 2);  // keep the length honest to reach the Verifier
    Message m;
    if (Decode(b.data(), len, &m) == Verdict::kOk) {
      ++ok;
      // Reading every field of an accepted message must stay in bounds (ASan checks).
      if (m.peers()->peers()) {
        for (const auto* e : *m.peers()->peers()) (void)FromWireAddr(e->addr());
      }
    }
  }
  EXPECT_LT(ok, 20000);  // most mutations are caught
}

}  // namespace
}  // namespace ringpeer::wire
