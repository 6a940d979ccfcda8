// Goal: the crypto helpers agree with themselves and reject tampering.
// Method: sign/verify round trips, flipped bits, known hash lengths and hex parsing.
#include "wire/crypto.h"

#include <gtest/gtest.h>

namespace ringpeer::wire {
namespace {

TEST(Crypto, SignVerifyAndTamper) {
  ASSERT_TRUE(InitCrypto());
  KeyPair kp = KeyPair::Generate();
  std::array<uint8_t, 5> msg{1, 2, 3, 4, 5};
  Signature sig = Sign(kp.secret_key, msg);
  EXPECT_TRUE(VerifySignature(kp.public_key, msg, sig));
  msg[0] ^= 1;
  EXPECT_FALSE(VerifySignature(kp.public_key, msg, sig));
  msg[0] ^= 1;
  sig[10] ^= 1;
  EXPECT_FALSE(VerifySignature(kp.public_key, msg, sig));
}

TEST(Crypto, SeedIsDeterministicAndIdIsHashOfKey) {
  std::array<uint8_t, 32> seed{};
  seed[0] = 1;
  KeyPair a = KeyPair::FromSeed(seed), b = KeyPair::FromSeed(seed);
  EXPECT_EQ(a.public_key, b.public_key);
  EXPECT_EQ(NodeIdOf(a.public_key), Blake2b256(a.public_key));
  seed[0] = 2;
  EXPECT_NE(KeyPair::FromSeed(seed).public_key, a.public_key);
}

TEST(Crypto, HasherMatchesOneShot) {
  std::array<uint8_t, 10> data{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  Hasher h;
  h.Update(std::span(data).first(3)).Update(std::span(data).subspan(3));
  EXPECT_EQ(h.Final(), Blake2b256(data));
}

TEST(Crypto, HexRoundTrip) {
  std::array<uint8_t, 32> v{};
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint8_t>(i * 7);
  std::string hex = Hex(v);
  std::array<uint8_t, 32> back{};
  ASSERT_TRUE(ParseHex32(hex, &back));
  EXPECT_EQ(back, v);
  EXPECT_FALSE(ParseHex32(hex.substr(1), &back));
  hex[5] = 'z';
  EXPECT_FALSE(ParseHex32(hex, &back));
}

}  // namespace
}  // namespace ringpeer::wire
