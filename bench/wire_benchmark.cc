// wire_benchmark: what the wire layer costs per datagram, next to one ed25519 verification.
//
// Each benchmark times one step a shard takes on the hot path: the fixed-header check,
// Decode (header + FlatBuffers Verifier + semantic checks) of the overlay messages, and the
// Encoder calls that build replies. ed25519 verification is here for scale: DESIGN.md
// orders checks by cost, and this shows the ratio on this machine. After the usual Google
// Benchmark table, the program prints one line `wire_ns: name=ns ...` (CPU ns per op) for
// scripts and the README.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "base/assert.h"
#include "bench/summary_reporter.h"
#include "base/endpoint.h"
#include "wire/crypto.h"
#include "wire/encode.h"
#include "wire/header.h"
#include "wire/message.h"

namespace ringpeer::wire {
namespace {

// A datagram buffer aligned as receive buffers are: Decode requires the body (at offset
// kHeaderBytes) to be 8-byte aligned.
struct Datagram {
  alignas(16) std::array<uint8_t, kDatagramBytesMax> bytes{};
  size_t size = 0;
};

NodeId SomeId(uint8_t seed) {
  NodeId id;
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(seed * 31 + i);
  return id;
}

base::Endpoint SomeAddr(uint8_t last) {
  return *base::Endpoint::Parse("10.0.0." + std::to_string(last) + ":7700");
}

Datagram MakePing() {
  Datagram d;
  Encoder enc;
  d.size = enc.Ping(d.bytes, kNoShardHint, 42, SomeId(1), nullptr);
  RP_ASSERT(d.size > 0);
  return d;
}

// A pong answering a challenge: carries the public key and signature, the largest pong.
Datagram MakePongWithProof() {
  const KeyPair keys = KeyPair::FromSeed(SomeId(2));
  const Hash256 challenge = SomeId(3);
  const auto signing = PongSigningBytes(challenge);
  const Signature sig = Sign(keys.secret_key, signing);
  Datagram d;
  Encoder enc;
  d.size = enc.Pong(d.bytes, kNoShardHint, 42, NodeIdOf(keys.public_key), SomeAddr(9),
                    &keys.public_key, &sig);
  RP_ASSERT(d.size > 0);
  return d;
}

Datagram MakePeers16() {
  std::vector<PeerInfo> peers;
  for (uint8_t i = 0; i < kPeersPerMessageMax; ++i) {
    peers.push_back(PeerInfo{SomeId(i), SomeAddr(static_cast<uint8_t>(i + 1))});
  }
  Datagram d;
  Encoder enc;
  d.size = enc.Peers(d.bytes, kNoShardHint, 42, SomeId(4), peers);
  RP_ASSERT(d.size > 0);
  return d;
}

void BM_CheckHeader(benchmark::State& state) {
  const Datagram d = MakePing();
  Header h;
  for (auto _ : state) {
    Verdict v = CheckHeader(d.bytes.data(), d.size, &h);
    benchmark::DoNotOptimize(v);
    benchmark::DoNotOptimize(h);
  }
}
BENCHMARK(BM_CheckHeader);

void DecodeLoop(benchmark::State& state, const Datagram& d) {
  Message m;
  for (auto _ : state) {
    Verdict v = Decode(d.bytes.data(), d.size, &m);
    benchmark::DoNotOptimize(v);
    benchmark::DoNotOptimize(m);
  }
  RP_ASSERT(Decode(d.bytes.data(), d.size, &m) == Verdict::kOk);
}

void BM_DecodePing(benchmark::State& state) { DecodeLoop(state, MakePing()); }
BENCHMARK(BM_DecodePing);

void BM_DecodePongWithProof(benchmark::State& state) {
  DecodeLoop(state, MakePongWithProof());
}
BENCHMARK(BM_DecodePongWithProof);

void BM_DecodePeers16(benchmark::State& state) { DecodeLoop(state, MakePeers16()); }
BENCHMARK(BM_DecodePeers16);

void BM_EncodePing(benchmark::State& state) {
  Encoder enc;
  Datagram d;
  const NodeId sender = SomeId(1);
  uint64_t txid = 0;
  for (auto _ : state) {
    size_t n = enc.Ping(d.bytes, kNoShardHint, ++txid, sender, nullptr);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_EncodePing);

// A liveness pong (no proof): what a node sends for every ping it answers.
void BM_EncodePong(benchmark::State& state) {
  Encoder enc;
  Datagram d;
  const NodeId responder = SomeId(1);
  const base::Endpoint observed = SomeAddr(7);
  uint64_t txid = 0;
  for (auto _ : state) {
    size_t n = enc.Pong(d.bytes, kNoShardHint, ++txid, responder, observed, nullptr, nullptr);
    benchmark::DoNotOptimize(n);
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_EncodePong);

void BM_Ed25519Verify(benchmark::State& state) {
  const KeyPair keys = KeyPair::FromSeed(SomeId(2));
  const auto signing = PongSigningBytes(SomeId(3));
  const Signature sig = Sign(keys.secret_key, signing);
  for (auto _ : state) {
    bool ok = VerifySignature(keys.public_key, signing, sig);
    benchmark::DoNotOptimize(ok);
  }
  RP_ASSERT(VerifySignature(keys.public_key, signing, sig));
}
BENCHMARK(BM_Ed25519Verify);

}  // namespace
}  // namespace ringpeer::wire

int main(int argc, char** argv) {
  if (!ringpeer::wire::InitCrypto()) {
    std::fprintf(stderr, "wire_benchmark: libsodium failed to initialise\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  ringpeer::bench::SummaryReporter reporter(
      {
          {"BM_CheckHeader", "check_header"},
          {"BM_DecodePing", "decode_ping"},
          {"BM_DecodePongWithProof", "decode_pong_proof"},
          {"BM_DecodePeers16", "decode_peers16"},
          {"BM_EncodePing", "encode_ping"},
          {"BM_EncodePong", "encode_pong"},
          {"BM_Ed25519Verify", "ed25519_verify"},
      },
      /*color=*/isatty(STDOUT_FILENO) != 0);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::printf("%s\n", reporter.SummaryLine("wire_ns:").c_str());
  return 0;
}
