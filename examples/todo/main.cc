// ringpeer-todo: a shared to-do list on ringpeer app rooms (examples/todo/README.md).
//
//   ringpeer-todo create LIST --bootstrap HOST:PORT [--writers N] [--json]
//   ringpeer-todo add INVITE TEXT... | -      (each argument, or each line of stdin)
//   ringpeer-todo done INVITE NUMBER [--undo]
//   ringpeer-todo remove INVITE NUMBER
//   ringpeer-todo list INVITE [--json]
//   ringpeer-todo watch INVITE [--for SECONDS]
//
// Every command but create starts an embedded client (node/client) in --data-dir, joins
// the room through a relay, catches up, does its work and leaves. The reducer runs in the
// client (ClientOptions::app_reducer); relays store and forward the list unread.
#include <signal.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "examples/todo/todo.h"
#include "node/admin/json.h"
#include "node/client/client.h"

namespace {

using ringpeer::client::Client;
using ringpeer::client::RoomState;

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

volatile std::sig_atomic_t g_stop = 0;
void OnStopSignal(int) { g_stop = 1; }

const char kUsage[] =
    "usage: ringpeer-todo COMMAND [ARGS] [FLAGS]\n"
    "\n"
    "commands:\n"
    "  create LIST            make a list: prints writer and reader invites\n"
    "  add INVITE TEXT...     add items (TEXT '-': one item per line of stdin)\n"
    "  done INVITE NUMBER     tick item NUMBER (--undo: untick it)\n"
    "  remove INVITE NUMBER   remove item NUMBER\n"
    "  list INVITE            print the list\n"
    "  watch INVITE           print the list, then each change as it comes\n"
    "\n"
    "flags:\n"
    "  --data-dir DIR         this member's key and room cache (default ./todo-client)\n"
    "  --bootstrap HOST:PORT  relay to join through, besides the invite's (repeatable)\n"
    "  --listen ADDR:PORT     UDP address of the embedded node (default 0.0.0.0:0)\n"
    "  --timeout SECONDS      how long to wait for a relay (default 15)\n"
    "  --json                 create, list: one JSON object\n"
    "  --writers N            create: writer invites (1-4, default 1)\n"
    "  --undo                 done: mark the item not done\n"
    "  --for SECONDS          watch: stop after this long (default: until Ctrl-C)\n"
    "  --checkpoint-every N   make a checkpoint after N own updates (default 1000)\n"
    "  --stay SECONDS         after writing, stay in the room this long (or until\n"
    "                         Ctrl-C) so that relays can fetch a checkpoint just made\n";

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> flags;
  std::optional<std::string> Value(const std::string& name) const {
    auto it = flags.find(name);
    if (it == flags.end() || it->second.empty()) return std::nullopt;
    return it->second.back();
  }
  bool Has(const std::string& name) const { return flags.contains(name); }
};

int Usage(const std::string& message) {
  std::fprintf(stderr, "ringpeer-todo: %s (see 'ringpeer-todo --help')\n", message.c_str());
  return kExitUsage;
}

int Fail(const std::string& command, const absl::Status& s) {
  std::fprintf(stderr, "ringpeer-todo %s: %s\n", command.c_str(),
               std::string(s.message()).c_str());
  return kExitRuntime;
}

// Parse: flags with a value, and switches; anything else is positional.
std::optional<Args> Parse(int argc, char** argv, std::string* error) {
  static const char* const kValued[] = {"data-dir", "bootstrap", "listen", "timeout",
                                        "writers", "for", "checkpoint-every", "stay"};
  static const char* const kSwitches[] = {"json", "undo"};
  Args a;
  a.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg == "-") {
      a.positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    bool known = false;
    for (const char* v : kValued) {
      if (name != v) continue;
      known = true;
      if (!inline_value) {
        if (i + 1 >= argc) {
          *error = absl::StrCat("--", name, " needs a value");
          return std::nullopt;
        }
        value = argv[++i];
      }
      a.flags[name].push_back(value);
    }
    for (const char* s : kSwitches) {
      if (name == s) {
        known = true;
        a.flags[name];
      }
    }
    if (!known) {
      *error = absl::StrCat("unknown flag --", name);
      return std::nullopt;
    }
  }
  return a;
}

absl::StatusOr<uint64_t> Number(const Args& a, const std::string& flag, uint64_t dflt,
                                uint64_t min, uint64_t max) {
  auto v = a.Value(flag);
  if (!v) return dflt;
  uint64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n) || n < min || n > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": '", *v, "' is not a whole number in [", min, ", ", max, "]"));
  }
  return n;
}

absl::StatusOr<std::vector<ringpeer::base::Endpoint>> Bootstrap(const Args& a) {
  std::vector<ringpeer::base::Endpoint> out;
  auto it = a.flags.find("bootstrap");
  if (it == a.flags.end()) return out;
  for (const std::string& text : it->second) {
    auto e = ringpeer::base::Endpoint::Parse(text);
    if (!e) return absl::InvalidArgumentError(absl::StrCat("--bootstrap: '", text, "' is not IP:PORT"));
    out.push_back(*e);
  }
  return out;
}

// ---- create ----

int Create(const Args& a) {
  if (a.positional.size() != 1) return Usage("create needs LIST");
  auto boot = Bootstrap(a);
  if (!boot.ok()) return Usage(std::string(boot.status().message()));
  if (boot->empty()) return Usage("create needs --bootstrap HOST:PORT (the relay the invites name)");
  auto writers = Number(a, "writers", 1, 1, ringpeer::client::kWritersMax);
  if (!writers.ok()) return Usage(std::string(writers.status().message()));
  // The genesis name says which app the room is for: todo:<list>.
  auto made = ringpeer::client::CreateRoom(std::string(todo::kRoomPrefix) + a.positional[0],
                                           *boot, *writers, ringpeer::room::ReducerKind::kOpaque);
  if (!made.ok()) return Fail("create", made.status());
  std::vector<std::string> writer_invites = {ringpeer::room::FormatInvite(made->writer)};
  for (const auto& w : made->more_writers) {
    writer_invites.push_back(ringpeer::room::FormatInvite(w));
  }
  const std::string reader = ringpeer::room::FormatInvite(made->reader);
  if (a.Has("json")) {
    ringpeer::admin::JsonWriter w;
    w.BeginObject();
    w.Key("room").String(ringpeer::wire::Hex(made->room_id));
    w.Key("writer_invites").BeginArray();
    for (const std::string& i : writer_invites) w.String(i);
    w.EndArray();
    w.Key("reader_invite").String(reader);
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("list %s (room %s)\n", a.positional[0].c_str(),
                ringpeer::wire::Hex(made->room_id).c_str());
    for (const std::string& i : writer_invites) std::printf("writer: %s\n", i.c_str());
    std::printf("reader: %s\n", reader.c_str());
  }
  return 0;
}

// ---- a joined session ----

struct Session {
  std::unique_ptr<Client> client;
  ringpeer::client::RoomRef room;
  int timeout_ms = 15000;
  bool from_checkpoint = false;  // the join started from a checkpoint
  uint64_t acked = 0;
};

absl::Status Open(const Args& a, const std::string& invite, Session* s) {
  ringpeer::client::ClientOptions o;
  o.data_dir = a.Value("data-dir").value_or("./todo-client");
  auto boot = Bootstrap(a);
  if (!boot.ok()) return boot.status();
  o.bootstrap = *boot;
  const std::string listen = a.Value("listen").value_or("0.0.0.0:0");
  auto l = ringpeer::base::Endpoint::Parse(listen);
  if (!l) return absl::InvalidArgumentError(absl::StrCat("--listen: '", listen, "' is not IP:PORT"));
  o.listen = *l;
  auto timeout = Number(a, "timeout", 15, 1, 3600);
  if (!timeout.ok()) return timeout.status();
  s->timeout_ms = static_cast<int>(*timeout * 1000);
  auto every = Number(a, "checkpoint-every", 0, 1, 1'000'000);
  if (!every.ok()) return every.status();
  o.checkpoint_every = static_cast<uint32_t>(*every);
  // The app's reducer for its own rooms; called on the client's shard thread, so it only
  // makes a fresh object.
  o.app_reducer = [](const ringpeer::room::Genesis& g) -> std::unique_ptr<ringpeer::room::Reducer> {
    if (!todo::IsTodoRoom(g)) return nullptr;
    return std::make_unique<todo::TodoReducer>();
  };
  auto c = Client::Start(o);
  if (!c.ok()) return c.status();
  s->client = std::move(*c);
  s->client->OnCheckpoint([s](const ringpeer::client::RoomRef&) { s->from_checkpoint = true; });
  s->client->OnAcked([s](const ringpeer::client::RoomRef&, const ringpeer::wire::Hash256&) {
    ++s->acked;
  });
  auto room = s->client->Join(invite);
  if (!room.ok()) return room.status();
  s->room = *room;
  return absl::OkStatus();
}

// CatchUp: polls until the room holds the heads a peer announced; the list as of then.
absl::StatusOr<RoomState> CatchUp(Session* s, todo::TodoReducer* list) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(s->timeout_ms);
  for (;;) {
    s->client->Poll(20);
    auto st = s->client->State(s->room);
    if (!st.ok()) return st.status();
    if (st->caught_up && !st->syncing) {
      if (!list->Load(st->state)) {
        return absl::DataLossError("the room's state is not a to-do list (another app's room?)");
      }
      return st;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          st->peers == 0
              ? absl::StrCat("no relay answered within ", s->timeout_ms / 1000,
                             " s (is `ringpeer serve` running? try --bootstrap HOST:PORT)")
              : absl::StrCat("not caught up within ", s->timeout_ms / 1000, " s (",
                             st->log_size, " updates so far)"));
    }
  }
}

// Write: publishes the updates and waits until a relay acknowledged each (durable).
absl::Status Write(Session* s, std::vector<std::vector<uint8_t>> payloads) {
  const uint64_t want = s->acked + payloads.size();
  // In batches a relay lets one member burst (200), each acked before the next.
  constexpr size_t kBatch = 100;
  size_t sent = 0;
  while (sent < payloads.size()) {
    const size_t n = std::min(kBatch, payloads.size() - sent);
    std::vector<std::vector<uint8_t>> batch(payloads.begin() + sent, payloads.begin() + sent + n);
    auto ids = s->client->Publish(s->room, std::move(batch));
    if (!ids.ok()) return ids.status();
    sent += n;
    const uint64_t until = want - (payloads.size() - sent);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(s->timeout_ms);
    while (s->acked < until && std::chrono::steady_clock::now() < deadline) s->client->Poll(20);
    if (s->acked < until) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no relay acknowledged ", until - s->acked, " update(s) within ",
          s->timeout_ms / 1000, " s; they may still arrive, but are not durable"));
    }
  }
  return absl::OkStatus();
}

// Stay: keeps the member in the room for --stay seconds or until SIGINT/SIGTERM, so that
// relays fetch a checkpoint it has just made (they ask every peer that advertises one).
void Stay(const Args& a, Session* s) {
  auto stay = Number(a, "stay", 0, 0, 3600);
  if (!stay.ok() || *stay == 0) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*stay);
  while (!g_stop && std::chrono::steady_clock::now() < deadline) s->client->Poll(50);
}

void PrintList(const todo::TodoReducer& list) {
  if (list.items().empty()) std::printf("(the list is empty)\n");
  for (const auto& [number, item] : list.items()) {
    std::printf("%3u [%c] %s\n", number, item.done ? 'x' : ' ', item.text.c_str());
  }
  std::fflush(stdout);
}

void PrintJson(const todo::TodoReducer& list, const RoomState& st, const Session& s) {
  ringpeer::admin::JsonWriter w;
  w.BeginObject();
  w.Key("items").BeginArray();
  for (const auto& [number, item] : list.items()) {
    w.BeginObject();
    w.Key("number").Uint(number);
    w.Key("done").Bool(item.done);
    w.Key("text").String(item.text);
    w.EndObject();
  }
  w.EndArray();
  w.Key("log_size").Uint(st.log_size);
  w.Key("from_checkpoint").Bool(s.from_checkpoint);
  w.Key("restored").Uint(st.restored);
  w.Key("can_write").Bool(st.can_write);
  w.Key("state_hash").String(ringpeer::wire::Hex(st.state_hash));
  w.EndObject();
  std::printf("%s\n", w.str().c_str());
}

absl::StatusOr<uint32_t> ItemNumber(const std::string& text, const todo::TodoReducer& list) {
  uint32_t n = 0;
  if (!absl::SimpleAtoi(text, &n) || n == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an item number"));
  }
  if (!list.items().contains(n)) {
    return absl::NotFoundError(absl::StrCat("no item #", n, " in the list ('list' shows them)"));
  }
  return n;
}

int Member(const Args& a) {
  const std::string& cmd = a.command;
  const size_t want = cmd == "list" || cmd == "watch" ? 1 : 2;
  if (cmd == "add" ? a.positional.size() < 2 : a.positional.size() != want) {
    return Usage(absl::StrCat(cmd, " needs INVITE", want == 2 ? (cmd == "add" ? " and TEXT" : " and NUMBER") : ""));
  }
  Session s;
  absl::Status st = Open(a, a.positional[0], &s);
  if (!st.ok()) return Fail(cmd, st);
  todo::TodoReducer list;
  auto state = CatchUp(&s, &list);
  if (!state.ok()) return Fail(cmd, state.status());

  if (cmd == "list") {
    if (a.Has("json")) {
      PrintJson(list, *state, s);
    } else {
      PrintList(list);
    }
    return 0;
  }
  if (cmd == "watch") {
    PrintList(list);
    std::printf("-- watching (Ctrl-C to stop)\n");
    std::fflush(stdout);
    auto seconds = Number(a, "for", 0, 0, 86400);
    if (!seconds.ok()) return Usage(std::string(seconds.status().message()));
    const uint64_t mark = state->event_mark;  // updates before it are in the list printed
    s.client->OnUpdate([mark](const ringpeer::client::UpdateEvent& u) {
      if (u.seq < mark) return;
      std::printf("%s%s\n", u.own ? "(own) " : "",
                  u.payload.empty() ? "an update this member cannot read"
                                    : todo::Describe(u.payload).c_str());
      std::fflush(stdout);
    });
    Session* sp = &s;
    s.client->OnCheckpoint([sp](const ringpeer::client::RoomRef&) {
      // The state jumped: show the whole list again.
      todo::TodoReducer now;
      auto st = sp->client->State(sp->room);
      if (st.ok() && now.Load(st->state)) {
        std::printf("-- started over from a checkpoint:\n");
        PrintList(now);
      }
    });
    const auto deadline = *seconds == 0 ? std::chrono::steady_clock::time_point::max()
                                        : std::chrono::steady_clock::now() +
                                              std::chrono::seconds(*seconds);
    while (!g_stop && std::chrono::steady_clock::now() < deadline) s.client->Poll(50);
    (void)s.client->Leave(s.room);
    return 0;
  }

  if (!state->can_write) return Fail(cmd, absl::PermissionDeniedError("this invite is read-only"));
  std::vector<std::vector<uint8_t>> payloads;
  if (cmd == "add") {
    std::vector<std::string> texts;
    if (a.positional.size() == 2 && a.positional[1] == "-") {
      std::string line;
      while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) texts.push_back(line);
      }
    } else {
      texts.assign(a.positional.begin() + 1, a.positional.end());
    }
    for (const std::string& t : texts) {
      if (t.size() > todo::kTextBytesMax) {
        return Fail(cmd, absl::InvalidArgumentError(
                             absl::StrCat("an item is at most ", todo::kTextBytesMax, " bytes")));
      }
      payloads.push_back(todo::AddPayload(t));
    }
  } else if (cmd == "done" || cmd == "remove") {
    auto n = ItemNumber(a.positional[1], list);
    if (!n.ok()) return Fail(cmd, n.status());
    payloads.push_back(cmd == "done" ? todo::DonePayload(*n, !a.Has("undo"))
                                     : todo::RemovePayload(*n));
  } else {
    return Usage(absl::StrCat("unknown command '", cmd, "'"));
  }
  st = Write(&s, std::move(payloads));
  if (!st.ok()) return Fail(cmd, st);
  Stay(a, &s);
  auto after = s.client->State(s.room);
  if (after.ok() && list.Load(after->state)) PrintList(list);
  (void)s.client->Leave(s.room);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::printf("%s", kUsage);
    return argc < 2 ? kExitUsage : 0;
  }
  std::string error;
  auto args = Parse(argc, argv, &error);
  if (!args) return Usage(error);
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  if (args->command == "create") return Create(*args);
  static const char* const kMember[] = {"add", "done", "remove", "list", "watch"};
  for (const char* m : kMember) {
    if (args->command == m) return Member(*args);
  }
  return Usage(absl::StrCat("unknown command '", args->command, "'"));
}
