// Goal: Endpoint parsing, printing and sockaddr conversion agree with each other.
// Method: round-trip known forms and reject malformed ones.
#include "base/endpoint.h"

#include <gtest/gtest.h>

namespace ringpeer::base {
namespace {

TEST(Endpoint, ParsesAndPrintsV4) {
  auto e = Endpoint::Parse("127.0.0.1:7700");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->is_v4());
  EXPECT_EQ(e->port, 7700);
  EXPECT_EQ(e->ToString(), "127.0.0.1:7700");
}

TEST(Endpoint, ParsesAndPrintsV6) {
  auto e = Endpoint::Parse("[::1]:9");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->family, Endpoint::Family::kV6);
  EXPECT_EQ(e->ToString(), "[::1]:9");
}

TEST(Endpoint, MappedV6BecomesV4) {
  auto e = Endpoint::Parse("[::ffff:10.1.2.3]:5");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->is_v4());
  EXPECT_EQ(e->ToString(), "10.1.2.3:5");
  sockaddr_storage ss;
  socklen_t len = e->ToSockaddr(&ss, /*v6_socket=*/true);
  EXPECT_EQ(len, sizeof(sockaddr_in6));
  Endpoint back = Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  EXPECT_EQ(back, *e);
  len = e->ToSockaddr(&ss, /*v6_socket=*/false);
  EXPECT_EQ(len, sizeof(sockaddr_in));
  EXPECT_EQ(Endpoint::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len), *e);
}

TEST(Endpoint, RejectsMalformed) {
  EXPECT_FALSE(Endpoint::Parse("1.2.3.4").has_value());
  EXPECT_FALSE(Endpoint::Parse("1.2.3.4:65536").has_value());
  EXPECT_FALSE(Endpoint::Parse("1.2.3.4:x").has_value());
  EXPECT_FALSE(Endpoint::Parse("[::1:5").has_value());
  EXPECT_FALSE(Endpoint::Parse("example:5").has_value());
  EXPECT_TRUE(Endpoint::Parse("1.2.3.4", 7700).has_value());
}

TEST(Endpoint, HashSeparatesPorts) {
  auto a = *Endpoint::Parse("127.0.0.1:1");
  auto b = *Endpoint::Parse("127.0.0.1:2");
  EXPECT_NE(a.Hash(), b.Hash());
  EXPECT_EQ(a.HashAddressOnly(), b.HashAddressOnly());
}

}  // namespace
}  // namespace ringpeer::base
