// ringpeer: the command-line entry point.
//
//   ringpeer serve [flags]            run a node (no configuration needed)
//   ringpeer status [--data-dir DIR]  ask the node running on DIR how it is doing
//   ringpeer ready [--data-dir DIR]   exit 0 when that node has live, verified peers
//   ringpeer --version                version, wire protocol version, git commit
//
// Exit codes: 0 success, 1 runtime error (port in use, data dir, node not running),
// 2 usage error (bad flag or value).
#include <netdb.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/block_pool.h"
#include "base/endpoint.h"
#include "base/log.h"
#include "base/status.h"
#include "node/admin/control.h"
#include "node/admin/http.h"
#include "node/admin/json.h"
#include "node/admin/metrics.h"
#include "node/cli/build_info.h"
#include "node/cli/cpu_quota.h"
#include "node/cli/flags.h"
#include "node/cli/room_cmd.h"
#include "node/shard/node.h"
#include "node/store/data_dir.h"
#include "node/store/room_store.h"
#include "wire/crypto.h"
#include "wire/header.h"

namespace ringpeer::cli {
namespace {

constexpr uint16_t kDefaultPort = 7700;
// A relay prunes a room's log this long after the checkpoint that covers it (issue 16).
constexpr int64_t kRoomRetentionDefaultUs = 600'000'000;
constexpr char kDefaultDataDir[] = "./ringpeer-data";
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

constexpr FlagSpec kServeFlags[] = {
    {"listen", FlagSpec::Kind::kList, "RINGPEER_LISTEN", "ADDR:PORT", "[::]:7700",
     "UDP address to listen on; [::] also receives IPv4"},
    {"port", FlagSpec::Kind::kValue, "RINGPEER_PORT", "N", "7700",
     "port for the default listen address (0: any free port)"},
    {"shards", FlagSpec::Kind::kValue, "RINGPEER_SHARDS", "N",
     "one per available CPU (affinity mask, capped by the cgroup CPU quota)",
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
    {"gso", FlagSpec::Kind::kValue, "RINGPEER_GSO", "on|off", "on",
     "send a room's floods and checkpoint ranges as UDP GSO bursts where the kernel has "
     "UDP_SEGMENT (a burst the kernel or the device refuses turns them off by itself); "
     "off: datagram by datagram"},
    {"recv-gro", FlagSpec::Kind::kValue, "RINGPEER_RECV_GRO", "on|off", "off",
     "io_uring: receive UDP GSO/GRO bursts whole (UDP_GRO) and cut them in place: a "
     "checkpoint range costs one receive instead of 32; each shard's receive memory is then "
     "128 buffers of 65 KiB instead of 4096 of 2 KiB (clients turn it on). With several "
     "shards, a NIC's GRO joins a peer's datagrams whatever shard they are for: the "
     "shard that gets them hands them on"},
    {"coalesce-us", FlagSpec::Kind::kValue, "RINGPEER_COALESCE_US", "US", "0",
     "io_uring, kernel 6.12+: once a shard waits for datagrams, it sleeps at least this "
     "long (unless 32 completions come first), so one wakeup serves several at light "
     "load; less CPU per datagram, up to this much more latency (0: off)"},
    {"peers-max", FlagSpec::Kind::kValue, "RINGPEER_PEERS_MAX", "N", "1024",
     "size of the peer table"},
    {"bind-retry-ms", FlagSpec::Kind::kValue, "RINGPEER_BIND_RETRY_MS", "MS", "5000",
     "how long a listen port still held by a stopping node is retried"},
    {"storage-max", FlagSpec::Kind::kValue, "RINGPEER_STORAGE_MAX", "SIZE", "1G per shard",
     "most bytes the room store may hold, all shards together (e.g. 512M, 20G); each "
     "shard gets an equal share"},
    {"storage-map-bytes", FlagSpec::Kind::kValue, "RINGPEER_STORAGE_MAP_BYTES", "SIZE",
     "--storage-max / shards",
     "LMDB map size of each shard's store (address space, not disk; the per-shard cap)"},
    {"room-log-space", FlagSpec::Kind::kValue, "RINGPEER_ROOM_LOG_SPACE", "SIZE", "16G",
     "address space reserved at start for rooms' in-memory logs (memory is taken only as "
     "they grow; beyond it they use the heap, counted in status as room_log_pool.fallbacks; "
     "0: heap only)"},
    {"rooms-max", FlagSpec::Kind::kValue, "RINGPEER_ROOMS_MAX", "N", "256",
     "rooms each shard serves at once (a full table drops never-written rooms, then "
     "unloads idle ones)"},
    {"room-admission", FlagSpec::Kind::kValue, "RINGPEER_ROOM_ADMISSION", "open|listed",
     "open", "open: serve any room a member joins with (per-source limits); listed: only "
     "--room-allow rooms"},
    {"room-allow", FlagSpec::Kind::kList, "RINGPEER_ROOM_ALLOW", "HEX", nullptr,
     "a room id, or a room admin's public key, that --room-admission listed serves"},
    {"rooms-per-source", FlagSpec::Kind::kValue, "RINGPEER_ROOMS_PER_SOURCE", "N", "16",
     "open relay: new rooms one proved source address may make it serve per hour (0: no "
     "limit)"},
    {"room-idle-s", FlagSpec::Kind::kValue, "RINGPEER_ROOM_IDLE_S", "SECONDS", "600",
     "a full room table unloads rooms silent this long (they stay on disk and are "
     "reloaded when a member joins)"},
    {"room-publish-rate", FlagSpec::Kind::kValue, "RINGPEER_ROOM_PUBLISH_RATE", "N", "100",
     "new updates per second one member may publish in a room (burst: twice that; a "
     "relay peer forwarding many members: 16 times); a faster member is told to slow "
     "down and paces itself"},
    {"room-retention-s", FlagSpec::Kind::kValue, "RINGPEER_ROOM_RETENTION_S", "SECONDS", "600",
     "a room's log behind a checkpoint is kept this long after the checkpoint, then "
     "pruned from memory and disk (members further behind take the checkpoint); 0: keep "
     "every update"},
    {"subnet-limit", FlagSpec::Kind::kValue, "RINGPEER_SUBNET_LIMIT", "BUCKET/TABLE", "2/10",
     "routing-table entries per /24 or /48 of public addresses: per bucket / in the table"},
    {"subnet-limit-private", FlagSpec::Kind::kValue, "RINGPEER_SUBNET_LIMIT_PRIVATE", "on|off",
     "off",
     "on: apply --subnet-limit to private, CGNAT, ULA and link-local addresses too (by "
     "default they are exempt: container networks put every node in one /24)"},
    {"admin", FlagSpec::Kind::kValue, "RINGPEER_ADMIN", "ADDR:PORT|off",
     admin::kAdminDefaultAddress,
     "admin HTTP (/metrics /healthz /readyz /status); no authentication, keep it private"},
    {"log-level", FlagSpec::Kind::kValue, "RINGPEER_LOG_LEVEL", "LEVEL", "info",
     "debug, info, warn or error"},
    {"log-format", FlagSpec::Kind::kValue, "RINGPEER_LOG_FORMAT", "FORMAT", "text",
     "text, or json (one object per line)"},
    {"test-delay-ms", FlagSpec::Kind::kValue, "RINGPEER_TEST_DELAY_MS", "MS", "0",
     "test only: hold every sent datagram MS ms before sending (link delay for tests/netns, "
     "where the kernel has no netem)"},
    {"config", FlagSpec::Kind::kValue, "RINGPEER_CONFIG", "FILE", nullptr,
     "config file: 'name = value' lines with these flags' names; flags and env override it"},
    {"print-config", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr,
     "print the configuration in effect (as a config file) and exit"},
};

// How often the control thread looks at peers and counters, and how often it reports
// drops (limits hit, malformed traffic) in one aggregated line.
constexpr int kWatchTickMs = 1000;
constexpr int64_t kDropReportIntervalMs = 10'000;
constexpr int64_t kStorageReportIntervalMs = 60'000;

constexpr FlagSpec kStatusFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_DATA_DIR", "DIR", kDefaultDataDir,
     "data directory of the running node"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

// VersionLine: "ringpeer 0.1.0 (protocol 1, commit 0123456789ab)".
std::string VersionLine() {
  return absl::StrCat("ringpeer ", kProjectVersion, " (protocol ", wire::kVersion, ", commit ",
                      kGitCommit, ")");
}

admin::BuildInfo Build() { return {kProjectVersion, wire::kVersion, kGitCommit}; }

// WithBuild: the node's status JSON object with a "build" member first.
std::string WithBuild(const std::string& status_json) {
  if (status_json.empty() || status_json[0] != '{') return status_json;
  admin::JsonWriter w;
  w.BeginObject();
  w.Key("version").String(kProjectVersion);
  w.Key("protocol").Uint(wire::kVersion);
  w.Key("commit").String(kGitCommit);
  w.EndObject();
  const bool empty = status_json.size() > 1 && status_json[1] == '}';
  return absl::StrCat("{\"build\":", w.str(), empty ? "" : ",", status_json.substr(1));
}

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "ringpeer: a peer-to-peer node for Linux servers\n\n"
               "usage:\n"
               "  ringpeer serve [flags]    run a node (no configuration needed)\n"
               "  ringpeer status [flags]   show the running node's peers and counters\n"
               "  ringpeer ready [flags]    exit 0 when the node has live, verified peers\n"
               "  ringpeer lookup KEY       find the nodes nearest KEY in the DHT\n"
               "  ringpeer announce KEY     announce the node as a provider of KEY\n"
               "  ringpeer providers KEY    find the providers of KEY\n"
               "  ringpeer room create NAME make a room; prints its invites\n"
               "  ringpeer room post INVITE TEXT   publish a message (waits for a relay)\n"
               "  ringpeer room read INVITE [--follow] [--json]   print the messages\n"
               "  ringpeer room info INVITE [--json]   state hash, log size, heads, access\n"
               "  ringpeer room evict INVITE       rotate the keys without that member\n"
               "  ringpeer chat INVITE      a terminal chat\n"
               "  ringpeer version          version, wire protocol and git commit (--version)\n"
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

struct ServeSettings {
  shard::NodeConfig node;
  std::string data_dir;
  uint64_t room_log_space = base::BlockPool::kDefaultSpace;
  std::optional<base::Endpoint> admin;  // nullopt: --admin off
  base::LogLevel log_level = base::LogLevel::kInfo;
  base::LogFormat log_format = base::LogFormat::kText;
};

absl::StatusOr<ServeSettings> ServeConfig(const Flags& f) {
  ServeSettings settings;
  shard::NodeConfig& c = settings.node;
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
  c.shards = DefaultShards(shard::AvailableCpus().size(), CgroupCpuLimit());
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
  const std::string gso = f.Value("gso").value_or("on");
  if (gso != "on" && gso != "off") {
    return absl::InvalidArgumentError(absl::StrCat("--gso: '", gso, "' is not on or off"));
  }
  if (gso == "off") c.transport_config.burst_buffers = 0;
  const std::string gro = f.Value("recv-gro").value_or("off");
  if (gro != "on" && gro != "off") {
    return absl::InvalidArgumentError(absl::StrCat("--recv-gro: '", gro, "' is not on or off"));
  }
  c.transport_config.recv_gro = gro == "on";
  if (auto v = f.Value("coalesce-us")) {
    RP_ASSIGN_OR_RETURN(uint64_t us, ParseUint("coalesce-us", *v, 0, 10'000));
    c.transport_config.coalesce_us = static_cast<uint32_t>(us);
  }
  if (auto v = f.Value("peers-max")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("peers-max", *v, 8, 1'000'000));
    c.peers_max = static_cast<uint32_t>(r);
  }
  if (auto v = f.Value("bind-retry-ms")) {
    RP_ASSIGN_OR_RETURN(uint64_t ms, ParseUint("bind-retry-ms", *v, 0, 600'000));
    c.bind_retry_ms = static_cast<int64_t>(ms);
  }
  // The room store's size: a total split evenly between the shards, or each shard's map.
  constexpr uint64_t kStorageBytesMax = uint64_t{1} << 44;  // 16 TiB
  uint64_t map_bytes = store::kStoreMapBytesDefault;
  if (auto v = f.Value("storage-max")) {
    RP_ASSIGN_OR_RETURN(uint64_t total, ParseBytes("storage-max", *v,
                                                   store::kStoreMapBytesMin * c.shards,
                                                   kStorageBytesMax));
    map_bytes = total / c.shards;
  }
  if (auto v = f.Value("storage-map-bytes")) {
    RP_ASSIGN_OR_RETURN(map_bytes, ParseBytes("storage-map-bytes", *v,
                                              store::kStoreMapBytesMin, kStorageBytesMax));
  }
  c.room_store_bytes_max = map_bytes;
  if (auto v = f.Value("rooms-max")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("rooms-max", *v, 1, 1'000'000));
    c.rooms_max = static_cast<uint32_t>(r);
  }
  const std::string admission = f.Value("room-admission").value_or("open");
  if (admission != "open" && admission != "listed") {
    return absl::InvalidArgumentError(
        absl::StrCat("--room-admission: '", admission, "' is not open or listed"));
  }
  c.room_admission.policy =
      admission == "open" ? room::RoomAdmission::kOpen : room::RoomAdmission::kListed;
  for (const std::string& h : f.List("room-allow")) {
    wire::Hash256 id{};
    if (!wire::ParseHex32(h, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--room-allow: '", h, "' is not a room id or admin key (64 hex digits)"));
    }
    c.room_admission.allowed.push_back(id);
  }
  if (c.room_admission.policy == room::RoomAdmission::kListed &&
      c.room_admission.allowed.empty()) {
    return absl::InvalidArgumentError(
        "--room-admission listed needs at least one --room-allow (a room id or admin key)");
  }
  if (auto v = f.Value("rooms-per-source")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("rooms-per-source", *v, 0, 1'000'000));
    c.room_admission.new_rooms_per_source_per_hour = static_cast<uint32_t>(r);
  }
  if (auto v = f.Value("room-idle-s")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("room-idle-s", *v, 1, 365ull * 86400));
    c.room_admission.idle_unload_us = static_cast<int64_t>(r) * 1'000'000;
  }
  if (auto v = f.Value("room-publish-rate")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("room-publish-rate", *v, 1, 100'000));
    c.room_swarm.peer_publish_per_s = static_cast<uint32_t>(r);
    c.room_swarm.peer_publish_burst = static_cast<uint32_t>(r * 2);
  }
  c.room_swarm.retention_us = kRoomRetentionDefaultUs;
  if (auto v = f.Value("room-retention-s")) {
    RP_ASSIGN_OR_RETURN(uint64_t r, ParseUint("room-retention-s", *v, 0, 365ull * 86400));
    c.room_swarm.retention_us = static_cast<int64_t>(r) * 1'000'000;
  }
  if (auto v = f.Value("subnet-limit")) {
    const size_t slash = v->find('/');
    if (slash == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--subnet-limit: '", *v, "' is not BUCKET/TABLE (e.g. 2/10)"));
    }
    RP_ASSIGN_OR_RETURN(uint64_t b, ParseUint("subnet-limit", v->substr(0, slash), 1, 255));
    RP_ASSIGN_OR_RETURN(uint64_t t, ParseUint("subnet-limit", v->substr(slash + 1), 1, 1'000'000));
    c.subnet_per_bucket_max = static_cast<uint32_t>(b);
    c.subnet_per_table_max = static_cast<uint32_t>(t);
  }
  const std::string limit_private = f.Value("subnet-limit-private").value_or("off");
  if (limit_private != "on" && limit_private != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--subnet-limit-private: '", limit_private, "' is not on or off"));
  }
  c.subnet_limit_private = limit_private == "on";
  if (auto v = f.Value("test-delay-ms")) {
    RP_ASSIGN_OR_RETURN(uint64_t ms, ParseUint("test-delay-ms", *v, 0, 10'000));
    c.transport_config.send_delay_us = static_cast<int64_t>(ms) * 1000;
  }
  settings.data_dir = f.Value("data-dir").value_or(kDefaultDataDir);
  if (auto v = f.Value("room-log-space")) {
    RP_ASSIGN_OR_RETURN(settings.room_log_space,
                        ParseBytes("room-log-space", *v, 0, base::BlockPool::kMaxSpace));
    if (settings.room_log_space != 0 && settings.room_log_space < (uint64_t{1} << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--room-log-space: ", *v, " is less than 1M (0 keeps rooms' logs on the heap)"));
    }
  }
  const std::string admin = f.Value("admin").value_or(admin::kAdminDefaultAddress);
  if (admin != "off") {
    settings.admin = base::Endpoint::Parse(admin);
    if (!settings.admin) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--admin: '", admin, "' is not ADDR:PORT (e.g. 127.0.0.1:7780) or off"));
    }
  }
  const std::string level = f.Value("log-level").value_or("info");
  auto l = base::ParseLogLevel(level);
  if (!l) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level: '", level, "' is not one of debug, info, warn, error"));
  }
  settings.log_level = *l;
  const std::string format = f.Value("log-format").value_or("text");
  auto fm = base::ParseLogFormat(format);
  if (!fm) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format: '", format, "' is not text or json"));
  }
  settings.log_format = *fm;
  return settings;
}

// PrintConfig: the settings in effect, as a config file that `--config` reads back, each
// line saying where its value came from.
void PrintConfig(const Flags& f, const ServeSettings& s) {
  const shard::NodeConfig& c = s.node;
  std::vector<std::string> listen;
  for (const base::Endpoint& e : c.listen) listen.push_back(e.ToString());
  const char* transport = c.transport == ring::TransportKind::kIoUring ? "io_uring"
                          : c.transport == ring::TransportKind::kMmsg  ? "recvmmsg"
                                                                       : "auto";
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"listen", absl::StrJoin(listen, ", ")},
      {"port", f.Value("port").value_or(std::to_string(kDefaultPort))},
      {"shards", std::to_string(c.shards)},
      {"data-dir", s.data_dir},
      {"bootstrap", absl::StrJoin(f.List("bootstrap"), ", ")},
      {"transport", transport},
      {"rate-limit", std::to_string(c.rate_limit_per_s)},
      {"rate-burst", std::to_string(c.rate_limit_burst)},
      {"steering", c.steer ? "on" : "off"},
      {"gso", c.transport_config.burst_buffers > 0 ? "on" : "off"},
      {"recv-gro", c.transport_config.recv_gro ? "on" : "off"},
      {"coalesce-us", std::to_string(c.transport_config.coalesce_us)},
      {"peers-max", std::to_string(c.peers_max)},
      {"storage-max", std::to_string(c.room_store_bytes_max * c.shards)},
      {"storage-map-bytes", std::to_string(c.room_store_bytes_max)},
      {"room-log-space", std::to_string(s.room_log_space)},
      {"rooms-max", std::to_string(c.rooms_max)},
      {"room-admission",
       c.room_admission.policy == room::RoomAdmission::kOpen ? "open" : "listed"},
      {"rooms-per-source", std::to_string(c.room_admission.new_rooms_per_source_per_hour)},
      {"room-idle-s", std::to_string(c.room_admission.idle_unload_us / 1'000'000)},
      {"room-publish-rate", std::to_string(c.room_swarm.peer_publish_per_s)},
      {"room-retention-s", std::to_string(c.room_swarm.retention_us / 1'000'000)},
      {"subnet-limit", absl::StrCat(c.subnet_per_bucket_max, "/", c.subnet_per_table_max)},
      {"subnet-limit-private", c.subnet_limit_private ? "on" : "off"},
      {"admin", s.admin ? s.admin->ToString() : "off"},
      {"log-level", base::LogLevelName(s.log_level)},
      {"log-format", s.log_format == base::LogFormat::kJson ? "json" : "text"},
  };
  // Flags added later without a resolved row above still show, as given or as default.
  std::vector<std::pair<std::string, std::string>> all = rows;
  for (const FlagSpec& spec : kServeFlags) {
    const std::string name = spec.name;
    if (name == "config" || name == "print-config") continue;
    bool listed = false;
    for (const auto& row : rows) listed = listed || row.first == name;
    if (listed) continue;
    // Not given: left empty, so it prints as a comment (a default's help text, such as
    // "one per available CPU", is not a value the config file could read back).
    all.emplace_back(name, absl::StrJoin(f.List(name), ", "));
  }
  std::printf("# ringpeer serve: configuration in effect\n");
  if (auto cfg = f.Value("config")) std::printf("# config file: %s\n", cfg->c_str());
  for (const auto& [name, value] : all) {
    std::string source = f.Source(name);
    if (name == "listen" && source == "default") source = "default, from port";
    if (name == "shards" && source == "default") {
      source = "default, one per available CPU (affinity mask and cgroup CPU quota)";
    }
    std::string line = name + " = " + value;
    if (value.empty()) line = "# " + name + " =";  // an empty list: nothing to set
    if (line.size() < 40) line.resize(40, ' ');
    std::printf("%s # %s\n", line.c_str(), source.c_str());
  }
}

// Watch: the control thread's periodic look at the node. It turns snapshots and counter
// changes into log lines (peers gained and lost; drops aggregated per interval, never per
// packet) and caches the live-peer count that /readyz answers from.
class Watch {
 public:
  explicit Watch(shard::Node* node, std::mutex* mu) : node_(node), mu_(mu) {}

  void Tick() {
    std::vector<dht::PeerStatus> peers;
    admin::NodeMetrics m;
    {
      std::lock_guard<std::mutex> lock(*mu_);
      m = node_->Metrics(&peers);
    }
    if (!m.snapshot_ok) {
      if (!owner_silent_) base::Log(base::LogLevel::kWarn, "owner shard did not answer a snapshot");
      owner_silent_ = true;
    } else {
      owner_silent_ = false;
      ComparePeers(peers);
      live_.store(static_cast<int64_t>(m.peers_live), std::memory_order_relaxed);
    }
    ReportDrops(m);
    ReportStorage(m);
    ReportAdmission(m);
  }

  // Live: verified peers heard from recently, as of the last tick; -1 before the first.
  int64_t live() const { return live_.load(std::memory_order_relaxed); }
  // StorageError: why the room store cannot write, as of the last tick; empty when it can.
  std::string storage_error() const {
    std::lock_guard<std::mutex> lock(storage_mu_);
    return storage_error_;
  }

 private:
  void ComparePeers(const std::vector<dht::PeerStatus>& peers) {
    std::map<std::string, std::string> now;  // id -> address, live and verified only
    for (const dht::PeerStatus& p : peers) {
      if (p.live && p.verified) now[wire::Hex(p.id)] = p.addr.ToString();
    }
    for (const auto& [id, addr] : now) {
      if (!live_peers_.contains(id)) {
        base::Log(base::LogLevel::kInfo, "peer gained")
            .Field("peer", id).Field("addr", addr).Field("live_peers", now.size());
      }
    }
    for (const auto& [id, addr] : live_peers_) {
      if (!now.contains(id)) {
        base::Log(base::LogLevel::kInfo, "peer lost")
            .Field("peer", id).Field("addr", addr).Field("live_peers", now.size());
      }
    }
    if (!now.empty() != !live_peers_.empty() || first_) {
      base::Log(now.empty() ? base::LogLevel::kWarn : base::LogLevel::kInfo,
                now.empty() ? "not ready: no live peers" : "ready: has live peers")
          .Field("live_peers", now.size());
    }
    first_ = false;
    live_peers_ = std::move(now);
  }

  void ReportDrops(const admin::NodeMetrics& m) {
    std::array<uint64_t, wire::kVerdictCount> total{};
    for (const admin::ShardMetrics& s : m.shards) {
      for (int v = 0; v < wire::kVerdictCount; ++v) total[v] += s.dropped[v];
    }
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    if (last_report_ms_ == 0) {
      last_report_ms_ = now_ms;
      reported_ = total;
      return;
    }
    if (now_ms - last_report_ms_ < kDropReportIntervalMs) return;
    uint64_t sum = 0;
    for (int v = 1; v < wire::kVerdictCount; ++v) sum += total[v] - reported_[v];
    if (sum != 0) {
      base::Log line(base::LogLevel::kWarn, "datagrams dropped");
      line.Field("interval_s", (now_ms - last_report_ms_) / 1000).Field("total", sum);
      for (int v = 1; v < wire::kVerdictCount; ++v) {
        const uint64_t d = total[v] - reported_[v];
        if (d != 0) line.Field(wire::VerdictName(static_cast<wire::Verdict>(v)), d);
      }
    }
    last_report_ms_ = now_ms;
    reported_ = total;
  }

  // ReportStorage: a store that cannot write is logged when it starts failing, again at
  // most once a minute while it lasts, and once when it recovers. Failures that came and
  // went between two ticks are logged too (the commit-failure count moved).
  void ReportStorage(const admin::NodeMetrics& m) {
    uint64_t failures = 0;
    for (const admin::ShardMetrics& s : m.shards) failures += s.storage_commit_failures;
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    const bool failing = !m.storage_error.empty();
    if (failing) {
      if (!storage_failing_) storage_failures_at_start_ = storage_failures_;
      if (!storage_failing_ || now_ms - storage_logged_ms_ >= kStorageReportIntervalMs) {
        base::Log(base::LogLevel::kError,
                  "room storage cannot write; nothing is acknowledged until it can")
            .Field("error", m.storage_error)
            .Field("failed_commits", failures - storage_failures_at_start_)
            .Field("hint", "free space on the data directory's filesystem, or raise "
                           "--storage-max / --storage-map-bytes");
        storage_logged_ms_ = now_ms;
      }
    } else if (storage_failing_) {
      base::Log(base::LogLevel::kInfo, "room storage writable again; acknowledging")
          .Field("failed_commits", failures - storage_failures_at_start_);
    } else if (failures != storage_failures_) {
      base::Log(base::LogLevel::kWarn, "room storage commits failed, then worked again")
          .Field("failed_commits", failures - storage_failures_);
    }
    storage_failing_ = failing;
    storage_failures_ = failures;
    std::lock_guard<std::mutex> lock(storage_mu_);
    storage_error_ = m.storage_error;
  }

  // ReportAdmission: rooms refused, dropped or unloaded by admission, one aggregated line
  // per kDropReportIntervalMs at most (a squatter's joins never log per room).
  void ReportAdmission(const admin::NodeMetrics& m) {
    if (!m.rooms) return;
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
    if (now_ms - admission_logged_ms_ < kDropReportIntervalMs) return;
    std::map<std::string, uint64_t> now;
    for (const auto& [name, n] : m.rooms->admission) now[name] = n;
    std::vector<std::pair<std::string, uint64_t>> moved;
    bool any = false;
    for (const auto& [name, n] : now) {
      const uint64_t d = n - admission_[name];
      if (d != 0 && name != "opened" && name != "reloaded") any = true;
      if (d != 0) moved.emplace_back(name, d);
    }
    if (any) {
      base::Log line(base::LogLevel::kWarn, "room admission refused or evicted rooms");
      line.Field("interval_s", (now_ms - admission_logged_ms_) / 1000);
      for (const auto& [name, d] : moved) line.Field(name, d);
    }
    admission_ = std::move(now);
    admission_logged_ms_ = now_ms;
  }

  shard::Node* node_;
  std::mutex* mu_;
  std::map<std::string, uint64_t> admission_;
  int64_t admission_logged_ms_ = 0;
  bool storage_failing_ = false;
  uint64_t storage_failures_ = 0;
  uint64_t storage_failures_at_start_ = 0;
  int64_t storage_logged_ms_ = 0;
  mutable std::mutex storage_mu_;
  std::string storage_error_;
  std::atomic<int64_t> live_{-1};
  bool first_ = true;
  bool owner_silent_ = false;
  std::map<std::string, std::string> live_peers_;
  int64_t last_report_ms_ = 0;
  std::array<uint64_t, wire::kVerdictCount> reported_{};
};

int Serve(std::span<const char* const> args) {
  auto flags = Flags::Parse(kServeFlags, args, 0);
  if (!flags.ok()) return UsageError("serve", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer serve [flags]\n\nRuns a node. With no flags it listens on UDP "
                "port 7700 (IPv4 and IPv6) and keeps its data in ./ringpeer-data.\n"
                "Precedence: flag, then RINGPEER_* variable, then --config file, then "
                "default.\n\nflags:\n%s",
                Flags::Help(kServeFlags).c_str());
    return 0;
  }
  auto settings = ServeConfig(*flags);
  if (!settings.ok()) return UsageError("serve", settings.status());
  if (flags->Switch("print-config")) {
    PrintConfig(*flags, *settings);
    return 0;
  }
  base::SetLogLevel(settings->log_level);
  base::SetLogFormat(settings->log_format);
  const std::string& data_dir_path = settings->data_dir;
  if (!base::BlockPool::SetGlobalSpace(settings->room_log_space)) {
    base::Log(base::LogLevel::kWarn, "--room-log-space ignored: the pool was reserved before");
  }
  // Reserve it now, so that a refusal (vm.overcommit_memory=2, a ulimit -v) is said at start.
  if (settings->room_log_space > 0 && base::BlockPool::Global().stats().space == 0) {
    base::Log(base::LogLevel::kWarn, "room log pool not reserved: rooms' logs use the heap")
        .Field("room_log_space", settings->room_log_space);
  }
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

  settings->node.table_path = data_dir->File(store::kRoutingTableFile);
  // `ringpeer serve` is a relay: it stores the rooms its members bring (DIR/shard-N).
  settings->node.room_store_dir = data_dir_path;
  auto node = shard::Node::Create(settings->node, *key);
  if (!node.ok()) return RuntimeError(node.status());
  auto control = admin::ControlServer::Listen(data_dir->File(store::kControlSocketFile));
  if (!control.ok()) return RuntimeError(control.status());
  // The admin server is bound before the shards start, so that a busy admin port fails
  // the start with one line; until Start() its handlers see a node with no shards.
  shard::Node* n = node->get();
  // Every call that asks the owner shard for a snapshot goes through this mutex: the shard
  // takes one request at a time. Control path only; a shard never touches it.
  std::mutex snapshot_mu;
  // Set once Start() has returned: before that the shard table is being built and must
  // not be read from the admin threads.
  std::atomic<bool> running{false};
  Watch watch(n, &snapshot_mu);
  std::unique_ptr<admin::AdminHttpServer> http;
  std::string admin_error;  // the default admin address was taken: logged after the start
  if (settings->admin) {
    const auto start_time = std::chrono::steady_clock::now();
    admin::AdminHandlers h;
    h.metrics = [n, &snapshot_mu, &running, start_time, dir = data_dir_path] {
      admin::NodeMetrics m;
      if (running.load(std::memory_order_acquire)) {
        std::lock_guard<std::mutex> lock(snapshot_mu);
        m = n->Metrics();
      } else {
        m.node_id = wire::Hex(n->id());
        m.transport = "starting";
      }
      m.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time)
                       .count();
      m.storage_bytes = admin::DirectoryBytes(dir);
      return admin::RenderPrometheus(m) + admin::RenderBuildInfo(Build());
    };
    h.status_json = [n, &snapshot_mu, &running] {
      if (!running.load(std::memory_order_acquire)) return std::string("{\"starting\":true}");
      std::lock_guard<std::mutex> lock(snapshot_mu);
      return WithBuild(n->StatusJson());
    };
    h.ready = [&watch](std::string* why) {
      if (std::string e = watch.storage_error(); !e.empty()) {
        *why = "room storage cannot write (nothing is acknowledged): " + e;
        return false;
      }
      const int64_t live = watch.live();
      if (live > 0) return true;
      *why = live < 0 ? "starting" : "no live, verified overlay peers";
      return false;
    };
    auto server = admin::AdminHttpServer::Start(*settings->admin, std::move(h));
    if (server.ok()) {
      http = std::move(*server);
    } else if (flags->Source("admin") == "default") {
      // Several nodes on one host (tests, benchmarks) all default to the same port: the
      // first gets it, the others run without it rather than refusing to start.
      admin_error = std::string(server.status().message());
    } else {
      return RuntimeError(server.status());
    }
  }

  const std::vector<std::string> warnings = (*node)->TakeWarnings();
  absl::Status started = (*node)->Start();
  if (!started.ok()) {
    for (const std::string& w : warnings) base::Log(base::LogLevel::kWarn, w);
    return RuntimeError(started);
  }
  // The first log line names the build; it comes once everything is bound and started,
  // so that a start that fails (port in use, no io_uring) is still one line.
  base::Log(base::LogLevel::kInfo, "ringpeer")
      .Field("version", kProjectVersion)
      .Field("protocol", static_cast<int>(wire::kVersion))
      .Field("commit", kGitCommit);
  if (http) {
    base::Log(base::LogLevel::kInfo, "admin http listening")
        .Field("addr", http->address().ToString());
  } else if (!admin_error.empty()) {
    base::Log(base::LogLevel::kWarn, "admin http disabled: default address unavailable")
        .Field("error", admin_error)
        .Field("hint", "set --admin ADDR:PORT, or --admin off");
  }
  for (const std::string& w : warnings) base::Log(base::LogLevel::kWarn, w);
  running.store(true, std::memory_order_release);
  if (!(*node)->fallback_reason().empty()) {
    base::Log(base::LogLevel::kWarn, "io_uring unavailable; using recvmmsg/sendmmsg")
        .Field("reason", (*node)->fallback_reason());
  }
  std::vector<std::string> addrs;
  for (const base::Endpoint& e : (*node)->addresses()) addrs.push_back(e.ToString());
  base::Log(base::LogLevel::kInfo, "node started")
      .Field("node_id", wire::Hex((*node)->id()))
      .Field("udp", absl::StrJoin(addrs, ","))
      .Field("transport", (*node)->transport_name())
      .Field("shards", (*node)->shards())
      .Field("data_dir", data_dir_path)
      .Field("bootstrap", absl::StrJoin(flags->List("bootstrap"), ","));

  const int sig = control->ServeUntilSignal(
      sfd,
      [n, &snapshot_mu, &watch](std::string_view request) -> std::string {
        if (request == "ready") {
          const int64_t live = watch.live();
          if (live > 0) return absl::StrCat("ready: ", live, " live, verified peer(s)\n");
          return live < 0 ? "not ready: starting\n" : "not ready: no live, verified overlay peers\n";
        }
        std::lock_guard<std::mutex> lock(snapshot_mu);
        if (request == "status json") return WithBuild(n->StatusJson()) + "\n";
        if (request == "status text") {
          return absl::StrCat("version     ", kProjectVersion, " (protocol ", wire::kVersion,
                              ", commit ", kGitCommit, ")\n", n->StatusText());
        }
        return n->HandleControl(request);
      },
      kWatchTickMs, [&watch, n] {
        watch.Tick();
        n->PeriodicSave();
      });
  base::Log(base::LogLevel::kInfo, "stopping").Field("signal", strsignal(sig));
  http.reset();  // no request may reach the node while it stops
  (*node)->Stop();
  for (const std::string& w : (*node)->TakeWarnings()) base::Log(base::LogLevel::kWarn, w);
  close(sfd);
  base::Log(base::LogLevel::kInfo, "stopped");
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

constexpr FlagSpec kReadyFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_DATA_DIR", "DIR", kDefaultDataDir,
     "data directory of the running node"},
};

// Ready: the container health check (no curl in the image): what /readyz says, through
// the control socket. Exit 0 ready, 1 not ready or no node.
int Ready(std::span<const char* const> args) {
  auto flags = Flags::Parse(kReadyFlags, args, 0);
  if (!flags.ok()) return UsageError("ready", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer ready [flags]\n\nExits 0 when the node running on the data "
                "directory has live, verified overlay peers (what /readyz answers), 1 "
                "otherwise.\n\nflags:\n%s",
                Flags::Help(kReadyFlags).c_str());
    return 0;
  }
  const std::string dir = flags->Value("data-dir").value_or(kDefaultDataDir);
  auto answer = admin::ControlRequest(dir + "/" + store::kControlSocketFile, "ready",
                                      /*timeout_ms=*/3000);
  if (!answer.ok()) return RuntimeError(answer.status());
  std::fputs(answer->c_str(), stdout);
  return answer->rfind("ready", 0) == 0 ? 0 : kExitRuntime;
}

constexpr FlagSpec kQueryFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_DATA_DIR", "DIR", kDefaultDataDir,
     "data directory of the running node"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

// KeyFromText: 64 hex digits are an id as they stand; anything else names a resource and
// is hashed (key = BLAKE2b-256 of its bytes), so `ringpeer announce my-room` works.
wire::NodeId KeyFromText(const std::string& text) {
  wire::NodeId id;
  if (wire::ParseHex32(text, &id)) return id;
  return wire::Blake2b256({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Query: `ringpeer lookup|announce|providers KEY`: asks the running node to do it.
int Query(const std::string& verb, const char* what, std::span<const char* const> args) {
  auto flags = Flags::Parse(kQueryFlags, args, 1);
  if (!flags.ok()) return UsageError(verb, flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer %s KEY [flags]\n\n%s\nKEY is 64 hex digits, or any text, "
                "which is hashed with BLAKE2b-256.\n\nflags:\n%s",
                verb.c_str(), what, Flags::Help(kQueryFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 1) {
    return UsageError(verb, absl::InvalidArgumentError("needs one KEY"));
  }
  const wire::NodeId key = KeyFromText(flags->positional()[0]);
  const std::string dir = flags->Value("data-dir").value_or(kDefaultDataDir);
  const std::string request =
      absl::StrCat(verb, flags->Switch("json") ? " json " : " text ", wire::Hex(key));
  // The node answers within its command deadline (a lookup's own deadline and then some).
  auto answer = admin::ControlRequest(
      dir + "/" + store::kControlSocketFile, request,
      /*timeout_ms=*/static_cast<int>(core::kCommandDeadlineUs / 1000) + 5000);
  if (!answer.ok()) return RuntimeError(answer.status());
  if (answer->rfind("error: ", 0) == 0) {
    std::fprintf(stderr, "ringpeer %s: %s", verb.c_str(), answer->c_str() + 7);
    return kExitRuntime;
  }
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
  if (command == "ready") return Ready(rest);
  if (command == "lookup") {
    return Query("lookup", "Finds the nodes nearest KEY in the DHT (an iterative lookup).", rest);
  }
  if (command == "announce") {
    return Query("announce", "Announces the running node as a provider of KEY (republished "
                 "until it stops).", rest);
  }
  if (command == "providers") {
    return Query("providers", "Finds the providers of KEY in the DHT.", rest);
  }
  if (command == "room") return RoomMain(rest);
  if (command == "chat") return ChatMain(rest);
  if (command == "version" || command == "--version") {
    std::printf("%s\n", VersionLine().c_str());
    return 0;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  std::fprintf(stderr, "ringpeer: unknown command '%s' (see 'ringpeer help')\n", command.c_str());
  return kExitUsage;
}
