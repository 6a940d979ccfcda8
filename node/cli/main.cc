// ringpeer: the command-line entry point.
//
//   ringpeer serve [flags]            run a node (no configuration needed)
//   ringpeer status [--data-dir DIR]  ask the node running on DIR how it is doing
//
// Exit codes: 0 success, 1 runtime error (port in use, data dir, node not running),
// 2 usage error (bad flag or value).
#include <netdb.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/endpoint.h"
#include "base/status.h"
#include "node/admin/control.h"
#include "node/cli/flags.h"
#include "node/shard/node.h"
#include "node/store/data_dir.h"
#include "wire/crypto.h"

namespace ringpeer::cli {
namespace {

constexpr uint16_t kDefaultPort = 7700;
constexpr char kDefaultDataDir[] = "./ringpeer-data";
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

constexpr FlagSpec kServeFlags[] = {
    {"listen", FlagSpec::Kind::kList, "RINGPEER_LISTEN", "ADDR:PORT", "[::]:7700",
     "UDP address to listen on; [::] also receives IPv4"},
    {"port", FlagSpec::Kind::kValue, "RINGPEER_PORT", "N", "7700",
     "port for the default listen address (0: any free port)"},
    {"shards", FlagSpec::Kind::kValue, "RINGPEER_SHARDS", "N", "one per available CPU",
     "event-loop threads, each pinned to a CPU"},
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_DATA_DIR", "DIR", kDefaultDataDir,
     "node key, control socket and saved state"},
    {"bootstrap", FlagSpec::Kind::kList, "RINGPEER_BOOTSTRAP", "HOST:PORT", nullptr,
     "peer to join the network through"},
    {"transport", FlagSpec::Kind::kValue, "RINGPEER_TRANSPORT", "KIND", "auto",
     "auto, io_uring (fail if unavailable) or recvmmsg"},
    {"rate-limit", FlagSpec::Kind::kValue, "RINGPEER_RATE_LIMIT", "PPS", "5000",
     "datagrams per second accepted from one source address"},
    {"rate-burst", FlagSpec::Kind::kValue, "RINGPEER_RATE_BURST", "N", "10000",
     "burst allowed above --rate-limit"},
    {"steering", FlagSpec::Kind::kValue, "RINGPEER_STEERING", "on|off", "on",
     "steer datagrams to shards by their shard hint (reuseport BPF)"},
    {"peers-max", FlagSpec::Kind::kValue, "RINGPEER_PEERS_MAX", "N", "1024",
     "size of the peer table"},
};

constexpr FlagSpec kStatusFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_DATA_DIR", "DIR", kDefaultDataDir,
     "data directory of the running node"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "ringpeer: a peer-to-peer node for Linux servers\n\n"
               "usage:\n"
               "  ringpeer serve [flags]    run a node (no configuration needed)\n"
               "  ringpeer status [flags]   show the running node's peers and counters\n"
               "  ringpeer help             this text\n\n"
               "Run 'ringpeer COMMAND --help' for the flags of a command.\n");
}

int UsageError(const std::string& command, const absl::Status& s) {
  std::fprintf(stderr, "ringpeer %s: %s (see 'ringpeer %s --help')\n", command.c_str(),
               std::string(s.message()).c_str(), command.c_str());
  return kExitUsage;
}

int RuntimeError(const absl::Status& s) {
  std::fprintf(stderr, "ringpeer: %s\n", std::string(s.message()).c_str());
  return kExitRuntime;
}

// Resolve: "host:port" or "[v6]:port" to an endpoint (numeric first, then DNS).
absl::StatusOr<base::Endpoint> Resolve(const std::string& text) {
  if (auto e = base::Endpoint::Parse(text)) return *e;
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not HOST:PORT"));
  }
  const std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve '", text, "': ", gai_strerror(rc)));
  }
  base::Endpoint e = base::Endpoint::FromSockaddr(res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (!e.valid()) return absl::InvalidArgumentError(absl::StrCat("cannot resolve '", text, "'"));
  return e;
}

bool Ipv6Available() {
  int fd = socket(AF_INET6, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  close(fd);
  return true;
}

absl::StatusOr<shard::NodeConfig> ServeConfig(const Flags& f, std::string* data_dir) {
  shard::NodeConfig c;
  uint16_t port = kDefaultPort;
  if (auto v = f.Value("port")) {
    RP_ASSIGN_OR_RETURN(uint64_t p, ParseUint("port", *v, 0, 65535));
    port = static_cast<uint16_t>(p);
  }
  for (const std::string& l : f.List("listen")) {
    auto e = base::Endpoint::Parse(l, port);
    if (!e) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen: '", l, "' is not ADDR:PORT (e.g. 0.0.0.0:7700 or [::]:7700)"));
    }
    c.listen.push_back(*e);
  }
  if (c.listen.empty()) {
    c.listen.push_back(*base::Endpoint::Parse(Ipv6Available() ? "[::]" : "0.0.0.0", port));
  }
  c.shards = static_cast<uint32_t>(shard::AvailableCpus().size());
  if (auto v = f.Value("shards")) {
    RP_ASSIGN_OR_RETURN(uint64_t s, ParseUint("shards", *v, 1, 255));
    c.shards = static_cast<uint32_t>(s);
  }
  for (const std::string& b : f.List("bootstrap")) {
    auto e = Resolve(b);
    if (!e.ok()) return absl::InvalidArgumentError(absl::StrCat("--bootstrap: ", e.status().message()));
    c.bootstrap.push_back(*e);
  }
  const std::string transport = f.Value("transport").value_or("auto");
  if (transport == "auto") {
    c.transport = ring::TransportKind::kAuto;
  } else if (transport == "io_uring") {
    c.transport = ring::TransportKind::kIoUring;
  } else if (transport == "recvmmsg") {
    c.transport = ring::TransportKind::kMmsg;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--transport: '", transport, "' is not one of auto, io_uring, recvmmsg"));
  }
  if (auto v = f.Value("rate-limit")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("rate-limit", *v, 1, 100'000'000));
    c.rate_limit_per_s = static_cast<uint32_t>(r);
  }
  if (auto v = f.Value("rate-burst")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("rate-burst", *v, 1, 100'000'000));
    c.rate_limit_burst = static_cast<uint32_t>(r);
  }
  const std::string steering = f.Value("steering").value_or("on");
  if (steering != "on" && steering != "off") {
    return absl::InvalidArgumentError(absl::StrCat("--steering: '", steering, "' is not on or off"));
  }
  c.steer = steering == "on";
  if (auto v = f.Value("peers-max")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("peers-max", *v, 8, 1'000'000));
    c.peers_max = static_cast<uint32_t>(r);
  }
  *data_dir = f.Value("data-dir").value_or(kDefaultDataDir);
  return c;
}

int Serve(std::span<const char* const> args) {
  auto flags = Flags::Parse(kServeFlags, args, 0);
  if (!flags.ok()) return UsageError("serve", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer serve [flags]\n\nRuns a node. With no flags it listens on UDP "
                "port 7700 (IPv4 and IPv6) and keeps its data in ./ringpeer-data.\n\nflags:\n%s",
                Flags::Help(kServeFlags).c_str());
    return 0;
  }
  std::string data_dir_path;
  auto config = ServeConfig(*flags, &data_dir_path);
  if (!config.ok()) return UsageError("serve", config.status());
  if (!wire::InitCrypto()) return RuntimeError(absl::InternalError("libsodium failed to start"));
  auto data_dir = store::DataDir::Open(data_dir_path);
  if (!data_dir.ok()) return RuntimeError(data_dir.status());
  auto key = data_dir->LoadOrCreateNodeKey();
  if (!key.ok()) return RuntimeError(key.status());

  // Signals are taken synchronously by the main thread; shard threads inherit the mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (sfd < 0) return RuntimeError(base::ErrnoStatus(errno, "signalfd"));

  auto node = shard::Node::Create(*config, *key);
  if (!node.ok()) return RuntimeError(node.status());
  auto control = admin::ControlServer::Listen(data_dir->File(store::kControlSocketFile));
  if (!control.ok()) return RuntimeError(control.status());
  absl::Status started = (*node)->Start();
  if (!started.ok()) return RuntimeError(started);
  if (!(*node)->fallback_reason().empty()) {
    std::fprintf(stderr, "ringpeer: io_uring unavailable (%s); using recvmmsg/sendmmsg\n",
                 (*node)->fallback_reason().c_str());
  }
  std::vector<std::string> addrs;
  for (const base::Endpoint& e : (*node)->addresses()) addrs.push_back(e.ToString());
  std::fprintf(stderr, "ringpeer: node %s listening on udp %s (%s, %u shard%s), data in %s\n",
               wire::Hex((*node)->id()).c_str(), absl::StrJoin(addrs, ", ").c_str(),
               (*node)->transport_name(), (*node)->shards(), (*node)->shards() == 1 ? "" : "s",
               data_dir_path.c_str());

  shard::Node* n = node->get();
  const int sig = control->ServeUntilSignal(sfd, [n](std::string_view request) -> std::string {
    if (request == "status json") return n->StatusJson() + "\n";
    if (request == "status text") return n->StatusText();
    return "error: unknown request '" + std::string(request) + "'\n";
  });
  std::fprintf(stderr, "ringpeer: %s received, stopping\n", strsignal(sig));
  (*node)->Stop();
  close(sfd);
  std::fprintf(stderr, "ringpeer: stopped\n");
  return 0;
}

int Status(std::span<const char* const> args) {
  auto flags = Flags::Parse(kStatusFlags, args, 0);
  if (!flags.ok()) return UsageError("status", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer status [flags]\n\nShows the node id, peers and per-shard "
                "counters of the node running on a data directory.\n\nflags:\n%s",
                Flags::Help(kStatusFlags).c_str());
    return 0;
  }
  const std::string dir = flags->Value("data-dir").value_or(kDefaultDataDir);
  auto answer = admin::ControlRequest(dir + "/" + store::kControlSocketFile,
                                      flags->Switch("json") ? "status json" : "status text",
                                      /*timeout_ms=*/3000);
  if (!answer.ok()) return RuntimeError(answer.status());
  std::fputs(answer->c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace ringpeer::cli

int main(int argc, char** argv) {
  using namespace ringpeer::cli;
  if (argc < 2) {
    PrintUsage(stderr);
    return kExitUsage;
  }
  const std::string command = argv[1];
  std::span<const char* const> rest(const_cast<const char* const*>(argv) + 2,
                                    static_cast<size_t>(argc - 2));
  if (command == "serve") return Serve(rest);
  if (command == "status") return Status(rest);
  if (command == "help" || command == "--help" || command == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  std::fprintf(stderr, "ringpeer: unknown command '%s' (see 'ringpeer help')\n", command.c_str());
  return kExitUsage;
}
