// Endpoint: a compact, comparable UDP address (IPv4 or IPv6 plus port).
//
// Shared by ring/ (where datagrams come from and go to) and dht/ (where peers live), which
// must not see each other. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, as a dual-stack
// socket reports them) are normalised to IPv4 so that one peer has one Endpoint.
// A value type; thread-compatible.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace ringpeer::base {

struct Endpoint {
  enum class Family : uint8_t { kNone = 0, kV4 = 4, kV6 = 6 };

  Family family = Family::kNone;
  uint16_t port = 0;             // host byte order
  std::array<uint8_t, 16> ip{};  // v4 uses the first 4 bytes; the rest stay zero

  bool valid() const noexcept { return family != Family::kNone; }
  bool is_v4() const noexcept { return family == Family::kV4; }

  friend bool operator==(const Endpoint&, const Endpoint&) = default;

  // Hash: a cheap mix, good enough for open-addressing tables keyed by peers.
  uint64_t Hash() const noexcept {
    uint64_t a, b;
    std::memcpy(&a, ip.data(), 8);
    std::memcpy(&b, ip.data() + 8, 8);
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
    h ^= (uint64_t{port} << 8 | static_cast<uint8_t>(family)) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    return h * 0x94D049BB133111EBull;
  }

  // HashAddressOnly: as Hash() but ignoring the port (per-address rate limits).
  uint64_t HashAddressOnly() const noexcept {
    Endpoint e = *this;
    e.port = 0;
    return e.Hash();
  }

  // FromSockaddr: converts what the kernel reported. Returns an invalid Endpoint for an
  // unknown family or a short length.
  static Endpoint FromSockaddr(const sockaddr* sa, socklen_t len) noexcept {
    Endpoint e;
    if (sa == nullptr) return e;
    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      e.family = Family::kV4;
      e.port = ntohs(in->sin_port);
      std::memcpy(e.ip.data(), &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      e.port = ntohs(in6->sin6_port);
      const uint8_t* a = in6->sin6_addr.s6_addr;
      static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
      if (std::memcmp(a, kMapped, 12) == 0) {
        e.family = Family::kV4;
        std::memcpy(e.ip.data(), a + 12, 4);
      } else {
        e.family = Family::kV6;
        std::memcpy(e.ip.data(), a, 16);
      }
    }
    return e;
  }

  // ToSockaddr: fills `out` for sending. With `v6_socket`, IPv4 is written as a mapped
  // IPv6 address (for a dual-stack socket). Returns the length to pass to the kernel.
  socklen_t ToSockaddr(sockaddr_storage* out, bool v6_socket) const noexcept {
    std::memset(out, 0, sizeof(*out));
    if (family == Family::kV4 && !v6_socket) {
      auto* in = reinterpret_cast<sockaddr_in*>(out);
      in->sin_family = AF_INET;
      in->sin_port = htons(port);
      std::memcpy(&in->sin_addr, ip.data(), 4);
      return sizeof(sockaddr_in);
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    if (family == Family::kV4) {
      in6->sin6_addr.s6_addr[10] = 0xff;
      in6->sin6_addr.s6_addr[11] = 0xff;
      std::memcpy(in6->sin6_addr.s6_addr + 12, ip.data(), 4);
    } else {
      std::memcpy(in6->sin6_addr.s6_addr, ip.data(), 16);
    }
    return sizeof(sockaddr_in6);
  }

  // Parse: "1.2.3.4:7700", "[::1]:7700". With `default_port` a bare address is accepted.
  // Host names are not resolved here (see node/cli for that).
  static std::optional<Endpoint> Parse(std::string_view text,
                                       std::optional<uint16_t> default_port = {}) {
    std::string host;
    std::string_view port_text;
    if (!text.empty() && text.front() == '[') {
      size_t close = text.find(']');
      if (close == std::string_view::npos) return std::nullopt;
      host = std::string(text.substr(1, close - 1));
      std::string_view rest = text.substr(close + 1);
      if (!rest.empty()) {
        if (rest.front() != ':') return std::nullopt;
        port_text = rest.substr(1);
      }
    } else {
      size_t colon = text.rfind(':');
      if (colon != std::string_view::npos && text.find(':') == colon) {
        host = std::string(text.substr(0, colon));
        port_text = text.substr(colon + 1);
      } else {
        host = std::string(text);  // bare v4, or bare v6 without brackets
      }
    }
    Endpoint e;
    if (port_text.empty()) {
      if (!default_port) return std::nullopt;
      e.port = *default_port;
    } else {
      uint32_t p = 0;
      if (port_text.size() > 5) return std::nullopt;
      for (char c : port_text) {
        if (c < '0' || c > '9') return std::nullopt;
        p = p * 10 + static_cast<uint32_t>(c - '0');
      }
      if (p > 65535) return std::nullopt;
      e.port = static_cast<uint16_t>(p);
    }
    if (inet_pton(AF_INET, host.c_str(), e.ip.data()) == 1) {
      e.family = Family::kV4;
      return e;
    }
    in6_addr a6;
    if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
      sockaddr_in6 sa{};
      sa.sin6_family = AF_INET6;
      sa.sin6_addr = a6;
      sa.sin6_port = htons(e.port);
      return FromSockaddr(reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    }
    return std::nullopt;
  }

  // ToString: "1.2.3.4:7700" or "[::1]:7700".
  std::string ToString() const {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (family == Family::kV4) {
      inet_ntop(AF_INET, ip.data(), buf, sizeof(buf));
      return std::string(buf) + ":" + std::to_string(port);
    }
    if (family == Family::kV6) {
      inet_ntop(AF_INET6, ip.data(), buf, sizeof(buf));
      return "[" + std::string(buf) + "]:" + std::to_string(port);
    }
    return "(none)";
  }
};

// EndpointHash: Endpoint::Hash for hash tables keyed by peers' addresses.
struct EndpointHash {
  size_t operator()(const Endpoint& e) const noexcept { return e.Hash(); }
};

}  // namespace ringpeer::base
