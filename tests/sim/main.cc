// ringpeer-sim: runs the DHT simulator for a given size, loss and churn, and (with --rooms)
// the rooms simulator with its faults and checkers; prints the figures, and ends with one
// line of key=value pairs (see README.md). Exit 1 when a rooms checker failed.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <string>
#include <vector>

#include "tests/sim/heap.h"
#include "tests/sim/room_sim.h"
#include "tests/sim/sim.h"

namespace {

void Usage() {
  std::fprintf(stderr,
               "usage: ringpeer-sim [--nodes N] [--seed S] [DHT flags] [--rooms R [room flags]]\n"
               "DHT: [--loss P] [--duplicate P] [--churn F] [--lookups L] [--hellos H]\n"
               "  [--size-estimates E] [--paths D] [--measure-s T] [--no-walks] [--real-crypto]\n"
               "  [--hostile F]... [--hostile-mode mix|drop|fake|collude] [--no-lookup-defences]\n"
               "rooms: --rooms R (rooms to simulate; 0: none) [--seconds T] [--heal-s H]\n"
               "  [--members M] [--relays K] [--room-loss P] [--checkpointers C] [--writer-ms W]\n"
               "  [--partition-mean-s S]\n"
               "  [--checkpoint-every U] [--no-dht]"
#ifdef RINGPEER_PLANTED_BUGS
               " [--planted ack-early|old-key|skip-signature]"
#endif
               "\n  [--verbose]\n");
}

}  // namespace

int main(int argc, char** argv) {
  ringpeer::sim::SimConfig c;
  ringpeer::sim::RoomSimConfig rc;
  c.nodes = 10000;
  bool nodes_given = false, dht = true, rooms = false;
  std::vector<double> hostile;  // one DHT run per fraction given (issue 14, item 5)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        Usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--nodes") {
      c.nodes = static_cast<uint32_t>(std::atoi(next()));
      nodes_given = true;
    }
    else if (a == "--loss") c.loss = std::atof(next());
    else if (a == "--duplicate") c.duplicate = std::atof(next());
    else if (a == "--churn") c.churn = std::atof(next());
    else if (a == "--seed") c.seed = std::strtoull(next(), nullptr, 10);
    else if (a == "--lookups") c.lookups = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--hellos") c.hellos = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--size-estimates") c.size_estimates = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--paths") c.disjoint_paths = static_cast<uint8_t>(std::atoi(next()));
    else if (a == "--measure-s") c.measure_us = static_cast<int64_t>(std::atof(next()) * 1e6);
    else if (a == "--no-walks") c.walk_estimates = false;
    else if (a == "--real-crypto") c.real_crypto = true;
    else if (a == "--hostile") hostile.push_back(std::atof(next()));
    else if (a == "--no-lookup-defences") c.lookup_defences = false;
    else if (a == "--hostile-mode") {
      const std::string m = next();
      if (m == "mix") c.hostile_mode = ringpeer::sim::kHostileMix;
      else if (m == "drop") c.hostile_mode = ringpeer::sim::kHostileDrop;
      else if (m == "fake") c.hostile_mode = ringpeer::sim::kHostileFake;
      else if (m == "collude") c.hostile_mode = ringpeer::sim::kHostileCollude;
      else {
        Usage();
        return 2;
      }
    }
    else if (a == "--verbose") c.verbose = rc.verbose = true;
    else if (a == "--rooms") rc.rooms = static_cast<uint32_t>(std::atoi(next())), rooms = rc.rooms > 0;
    else if (a == "--seconds") rc.run_us = static_cast<int64_t>(std::atof(next()) * 1e6);
    else if (a == "--heal-s") rc.heal_us = static_cast<int64_t>(std::atof(next()) * 1e6);
    else if (a == "--members") rc.members_per_room = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--relays") rc.relays = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--room-loss") rc.loss = std::atof(next());
    else if (a == "--no-dht") dht = false;
    else if (a == "--checkpointers") rc.checkpointers = static_cast<uint32_t>(std::atoi(next()));
    else if (a == "--writer-ms") rc.writer_us = static_cast<int64_t>(std::atof(next()) * 1e3);
    else if (a == "--partition-mean-s") rc.partition_mean_us = static_cast<int64_t>(std::atof(next()) * 1e6);
    else if (a == "--checkpoint-every") rc.checkpoint_every = static_cast<uint32_t>(std::atoi(next()));
#ifdef RINGPEER_PLANTED_BUGS
    else if (a == "--planted") {
      const std::string p = next();
      if (p == "ack-early") rc.planted = 1;
      else if (p == "old-key") rc.planted = 2;
      else if (p == "skip-signature") rc.planted = 3;
      else {
        Usage();
        return 2;
      }
    }
#endif
    else {
      Usage();
      return 2;
    }
  }
  if (!ringpeer::wire::InitCrypto()) return 1;
  if (rooms && !nodes_given) c.nodes = rc.nodes;
  rc.nodes = c.nodes;
  rc.seed = c.seed;
  if (rooms && (rc.nodes < 8 || rc.nodes > 4000 || rc.members_per_room < 1 ||
                (rc.relays != 0 && rc.relays >= rc.nodes))) {
    std::fprintf(stderr, "ringpeer-sim: --rooms needs 8..4000 nodes, at least one member per "
                         "room and fewer relays than nodes\n");
    return 2;
  }
  if (dht && !hostile.empty()) {
    // One run per fraction, the same seed; the last line names each run's figures by its
    // fraction in percent (lookup_success_hostile10=...).
    std::string line = "nodes=" + std::to_string(c.nodes) + " seed=" + std::to_string(c.seed);
    for (double f : hostile) {
      const auto start = std::chrono::steady_clock::now();
      ringpeer::sim::SimConfig hc = c;
      hc.hostile = f;
      ringpeer::sim::SimReport r;
      {
        ringpeer::sim::Simulator sim(hc);
        r = sim.Run();
      }
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("--hostile %.2f\n%s", f, r.Text().c_str());
      std::printf("wall %.1f s; replay with --seed %llu --hostile %.2f\n", wall,
                  static_cast<unsigned long long>(c.seed), f);
      const std::string pct = std::to_string(std::lround(f * 100));
      char b[384];
      std::snprintf(b, sizeof(b),
                    " lookup_success_hostile%s=%.4f honest_found_hostile%s=%.2f "
                    "rounds_p50_hostile%s=%.0f msgs_per_lookup_p50_hostile%s=%.0f "
                    "lookup_s_p99_hostile%s=%.1f expired_hostile%s=%u",
                    pct.c_str(), r.honest_success, pct.c_str(), r.honest_found_mean,
                    pct.c_str(), r.rounds.p50, pct.c_str(), r.msgs_per_lookup.p50,
                    pct.c_str(), r.lookup_s.p99, pct.c_str(), r.lookups_expired);
      line += b;
    }
    std::printf("%s\n", line.c_str());
  } else if (dht) {
    const auto start = std::chrono::steady_clock::now();
    const int64_t heap_before = ringpeer::sim::heap::Total();
    ringpeer::sim::Simulator sim(c);
    ringpeer::sim::SimReport r = sim.Run();
    // Everything the simulation holds now (nodes, pending datagrams, bookkeeping), per node.
    r.bytes_per_node =
        static_cast<double>(ringpeer::sim::heap::Total() - heap_before) / sim.size();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s", r.Text().c_str());
    std::printf("wall %.1f s; replay with --seed %llu\n", wall,
                static_cast<unsigned long long>(c.seed));
    std::printf("%s\n", r.KeyValues().c_str());
  }
  if (!rooms) return 0;
  const auto start = std::chrono::steady_clock::now();
  ringpeer::sim::RoomSimReport rr;
  {
    ringpeer::sim::RoomSimulator sim(rc);
    rr = sim.Run();
  }
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s", rr.Text().c_str());
  std::printf("wall %.1f s; replay with --seed %llu%s\n", wall,
              static_cast<unsigned long long>(rc.seed),
              rr.ok() ? "" : " (the same flags find the same step)");
  std::printf("%s\n", rr.KeyValues().c_str());
  return rr.ok() ? 0 : 1;
}
