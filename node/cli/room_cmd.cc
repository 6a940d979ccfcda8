#include "node/cli/room_cmd.h"

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "node/admin/json.h"
#include "node/cli/flags.h"
#include "node/client/client.h"
#include "node/store/data_dir.h"

namespace ringpeer::cli {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr char kDefaultClientDir[] = "./ringpeer-client";

constexpr FlagSpec kCreateFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_DIR", "DIR", kDefaultClientDir,
     "where the admin key file is written (DIR/rooms/ROOM.admin, mode 0600)"},
    {"bootstrap", FlagSpec::Kind::kList, "RINGPEER_BOOTSTRAP", "HOST:PORT", nullptr,
     "relay the invites point joiners to (repeat for several)"},
    {"writers", FlagSpec::Kind::kValue, nullptr, "N", "1",
     "how many writer invites (each its own member key, so that one can be evicted)"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

constexpr FlagSpec kEvictFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_DIR", "DIR", kDefaultClientDir,
     "where `room create` wrote the admin key file; also the embedded client's directory"},
    {"admin-key", FlagSpec::Kind::kValue, nullptr, "FILE", "DIR/rooms/ROOM.admin",
     "the room's admin key file (rewritten with the re-issued invites)"},
    {"bootstrap", FlagSpec::Kind::kList, "RINGPEER_BOOTSTRAP", "HOST:PORT", nullptr,
     "relay to publish the rotation through, besides the invites' addresses"},
    {"listen", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_LISTEN", "ADDR:PORT", "0.0.0.0:0",
     "UDP address of the embedded node"},
    {"timeout", FlagSpec::Kind::kValue, nullptr, "SECONDS", "15",
     "how long to wait for a relay"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

constexpr FlagSpec kInviteFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_DIR", "DIR", kDefaultClientDir,
     "where `room create` wrote the admin key file; also the embedded client's directory"},
    {"admin-key", FlagSpec::Kind::kValue, nullptr, "FILE", "DIR/rooms/ROOM.admin",
     "the room's admin key file (the new member is added to it)"},
    {"bootstrap", FlagSpec::Kind::kList, "RINGPEER_BOOTSTRAP", "HOST:PORT", nullptr,
     "relay to publish through and to name in the invite (default: the members' relays)"},
    {"listen", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_LISTEN", "ADDR:PORT", "0.0.0.0:0",
     "UDP address of the embedded node"},
    {"timeout", FlagSpec::Kind::kValue, nullptr, "SECONDS", "15",
     "how long to wait for a relay"},
    {"read", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "read-only access"},
    {"write", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "read and write (default)"},
    {"no-history", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr,
     "the new member reads only what follows (the epoch seals no earlier key)"},
    {"long", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr,
     "print the self-contained invite (genesis and key epochs; small rooms only)"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

constexpr FlagSpec kMembersFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_DIR", "DIR", kDefaultClientDir,
     "where `room create` wrote the admin key file"},
    {"admin-key", FlagSpec::Kind::kValue, nullptr, "FILE", "DIR/rooms/ROOM.admin",
     "the room's admin key file"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr, "print one JSON object"},
};

constexpr FlagSpec kClientFlags[] = {
    {"data-dir", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_DIR", "DIR", kDefaultClientDir,
     "the client's own node key (one running client per directory)"},
    {"bootstrap", FlagSpec::Kind::kList, "RINGPEER_BOOTSTRAP", "HOST:PORT", nullptr,
     "relay to join through, besides the invite's addresses"},
    {"listen", FlagSpec::Kind::kValue, "RINGPEER_CLIENT_LISTEN", "ADDR:PORT", "0.0.0.0:0",
     "UDP address of the embedded node"},
    {"nick", FlagSpec::Kind::kValue, "RINGPEER_NICK", "NAME", "$USER",
     "the name others see (a claim, not a proof)"},
    {"timeout", FlagSpec::Kind::kValue, nullptr, "SECONDS", "15",
     "how long to wait for a relay (join, catch-up, acks)"},
    {"follow", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr,
     "read: keep printing new messages until interrupted"},
    {"json", FlagSpec::Kind::kSwitch, nullptr, nullptr, nullptr,
     "read: one JSON object per message"},
};

int Usage(const std::string& command, const absl::Status& s) {
  std::fprintf(stderr, "ringpeer %s: %s (see 'ringpeer %s --help')\n", command.c_str(),
               std::string(s.message()).c_str(), command.c_str());
  return kExitUsage;
}

int Fail(const std::string& command, const absl::Status& s) {
  std::fprintf(stderr, "ringpeer %s: %s\n", command.c_str(), std::string(s.message()).c_str());
  return kExitRuntime;
}

// Resolve: "host:port" or "[v6]:port" (numeric first, then DNS).
absl::StatusOr<base::Endpoint> Resolve(const std::string& text) {
  if (auto e = base::Endpoint::Parse(text)) return *e;
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("--bootstrap: '", text, "' is not HOST:PORT"));
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--bootstrap: cannot resolve '", text, "': ", gai_strerror(rc)));
  }
  base::Endpoint e = base::Endpoint::FromSockaddr(res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (!e.valid()) return absl::InvalidArgumentError(absl::StrCat("cannot resolve '", text, "'"));
  return e;
}

absl::StatusOr<std::vector<base::Endpoint>> Bootstrap(const Flags& f) {
  std::vector<base::Endpoint> out;
  for (const std::string& b : f.List("bootstrap")) {
    auto e = Resolve(b);
    if (!e.ok()) return e.status();
    out.push_back(*e);
  }
  return out;
}

std::string ShortHex(const wire::PublicKey& k) { return wire::Hex(k).substr(0, 8); }

// ---- room create ----

int Create(std::span<const char* const> args) {
  auto flags = Flags::Parse(kCreateFlags, args, 1);
  if (!flags.ok()) return Usage("room create", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room create NAME [flags]\n\nMakes a chat room offline: an "
                "admin key (saved in DIR/rooms, mode 0600),\nthe room's genesis and first key "
                "epoch, and two invites: one to write, one to read.\nAn invite is a bearer "
                "secret: whoever holds it has its access.\n\nflags:\n%s",
                Flags::Help(kCreateFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 1) {
    return Usage("room create", absl::InvalidArgumentError("needs one NAME"));
  }
  auto boot = Bootstrap(*flags);
  if (!boot.ok()) return Usage("room create", boot.status());
  auto writers = ParseUint("writers", flags->Value("writers").value_or("1"), 1,
                           client::kWritersMax);
  if (!writers.ok()) return Usage("room create", writers.status());
  if (!wire::InitCrypto()) return Fail("room create", absl::InternalError("libsodium failed"));
  auto made = client::CreateRoom(flags->positional()[0], *boot, *writers);
  if (!made.ok()) return Fail("room create", made.status());
  const std::string dir = flags->Value("data-dir").value_or(kDefaultClientDir);
  auto data_dir = store::DataDir::Open(dir);
  if (!data_dir.ok()) return Fail("room create", data_dir.status());
  const std::string rooms = dir + "/rooms";
  if (mkdir(rooms.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail("room create", absl::InternalError(absl::StrCat("cannot create ", rooms)));
  }
  // Everything a later `room evict` needs to sign a rotation and re-grant the invites
  // that stay: the admin secret key and the invites' member seeds. Hence mode 0600.
  const std::string hex = wire::Hex(made->room_id);
  const std::string path = absl::StrCat(rooms, "/", hex, ".admin");
  std::string file = absl::StrCat(
      "# ringpeer room admin key: keep private; it signs key rotations\n", "room ", hex, "\n",
      "admin_secret ", wire::Hex(wire::Bytes(made->admin.secret_key.data(),
                                       made->admin.secret_key.size())), "\n",
      "writer_invite ", room::FormatInvite(made->writer), "\n",
      "reader_invite ", room::FormatInvite(made->reader), "\n");
  for (const room::Invite& w : made->more_writers) {
    absl::StrAppend(&file, "writer_invite ", room::FormatInvite(w), "\n");
  }
  absl::Status s = store::WriteFileAtomically(path, file, 0600);
  if (!s.ok()) return Fail("room create", s);
  const std::string writer = room::FormatInvite(made->writer);
  const std::string reader = room::FormatInvite(made->reader);
  if (flags->Switch("json")) {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key("room").String(hex);
    w.Key("name").String(flags->positional()[0]);
    w.Key("admin_key").String(path);
    w.Key("writer_invite").String(writer);
    w.Key("reader_invite").String(reader);
    w.Key("more_writer_invites").BeginArray();
    for (const room::Invite& m : made->more_writers) w.String(room::FormatInvite(m));
    w.EndArray();
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
    return 0;
  }
  std::printf("room        %s\nadmin key   %s  (private: it signs key rotations)\n\n"
              "writer invite (read and write):\n%s\n\nreader invite (read only):\n%s\n",
              hex.c_str(), path.c_str(), writer.c_str(), reader.c_str());
  for (size_t i = 0; i < made->more_writers.size(); ++i) {
    std::printf("\nwriter invite %zu (read and write):\n%s\n", i + 2,
                room::FormatInvite(made->more_writers[i]).c_str());
  }
  if (boot->empty()) {
    std::printf("\nnote: no --bootstrap given; joiners must pass --bootstrap HOST:PORT\n");
  }
  return 0;
}

// ---- a joined session (post, read, chat) ----

struct Session {
  std::unique_ptr<client::Client> client;
  client::RoomRef room;
  std::string nick;
  int timeout_ms = 15000;
  std::map<wire::PublicKey, std::string> nicks;  // from join/nick events and the state
  bool connected = false;
  // Updates with seq below this are in the state the history was printed from (or not
  // printed yet): FollowUpdates prints only those at or after it.
  uint64_t live_from = UINT64_MAX;
};

std::string NickOf(const Session& s, const wire::PublicKey& author) {
  auto it = s.nicks.find(author);
  return it == s.nicks.end() ? ShortHex(author) : it->second;
}

// Open: starts the client and joins; `before_join` sets callbacks that must see every
// event of the room (the history arrives right after the join).
absl::Status Open(const Flags& f, const std::string& invite, Session* s,
                  const std::function<void()>& before_join = [] {}) {
  client::ClientOptions o;
  o.data_dir = f.Value("data-dir").value_or(kDefaultClientDir);
  auto boot = Bootstrap(f);
  if (!boot.ok()) return boot.status();
  o.bootstrap = *boot;
  const std::string listen = f.Value("listen").value_or("0.0.0.0:0");
  auto l = base::Endpoint::Parse(listen);
  if (!l) return absl::InvalidArgumentError(absl::StrCat("--listen: '", listen, "' is not ADDR:PORT"));
  o.listen = *l;
  if (auto t = f.Value("timeout")) {
    auto v = ParseUint("timeout", *t, 1, 3600);
    if (!v.ok()) return v.status();
    s->timeout_ms = static_cast<int>(*v * 1000);
  }
  o.publish_timeout_ms = s->timeout_ms;
  const char* user = std::getenv("USER");
  s->nick = f.Value("nick").value_or(user != nullptr && *user ? user : "anon");
  auto c = client::Client::Start(o);
  if (!c.ok()) return c.status();
  s->client = std::move(*c);
  s->client->OnConnection([s](const client::RoomRef&, bool up) { s->connected = up; });
  before_join();
  auto room = s->client->Join(invite);
  if (!room.ok()) return room.status();
  s->room = *room;
  return absl::OkStatus();
}

// CatchUp: polls (running callbacks) until the room holds a peer's announced heads.
absl::StatusOr<client::RoomState> CatchUp(Session* s) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(s->timeout_ms);
  for (;;) {
    s->client->Poll(20);
    auto st = s->client->State(s->room);
    if (!st.ok()) return st.status();
    if (st->caught_up && !st->syncing) {
      // Events queued before and after the answer stay in the ring: the caller's next
      // Poll runs them, and UpdateEvent::seq against st->event_mark tells them apart.
      return st;
    }
    if (std::chrono::steady_clock::now() >= deadline && st->epoch < 0 &&
        st->epochs_refused > 0) {
      return absl::PermissionDeniedError(absl::StrCat(
          "refused the relay: it served ", st->epochs_refused, " key epoch(s) the room's "
          "admin did not sign, and no other relay answered within ", s->timeout_ms / 1000,
          " s"));
    }
    if (std::chrono::steady_clock::now() >= deadline && st->joining) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no relay sent the room's genesis within ", s->timeout_ms / 1000, " s",
          st->genesis_refused > 0 ? " (refused a genesis that was not this room's)" : "",
          "; is a relay serving the room at the invite's address?"));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          st->peers == 0 ? absl::StrCat("no relay answered within ", s->timeout_ms / 1000,
                                        " s (is `ringpeer serve` running at the invite's "
                                        "address? try --bootstrap HOST:PORT)")
                         : absl::StrCat("not caught up with the room within ",
                                        s->timeout_ms / 1000, " s (", st->log_size,
                                        " updates so far)"));
    }
  }
}

void LearnNicks(Session* s, const room::ChatReducer& chat) {
  for (const auto& [author, nick] : chat.members()) s->nicks[author] = nick;
}

void PrintLine(const Session& s, const wire::PublicKey& author, const std::string& text,
               bool json) {
  if (json) {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key("author").String(wire::Hex(author));
    w.Key("nick").String(NickOf(s, author));
    w.Key("text").String(text);
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("%s: %s\n", NickOf(s, author).c_str(), text.c_str());
  }
  std::fflush(stdout);
}

// ReportDropped: says when updates came faster than this client could show them (its
// event ring overflowed): they are in the room, but were not printed.
void ReportDropped(const Session& s, uint64_t* seen) {
  const uint64_t now = s.client->events_dropped();
  if (now == *seen) return;
  std::fprintf(stderr,
               "-- %llu update(s) came too fast to be shown here; they are in the room "
               "('ringpeer room read' prints it)\n",
               static_cast<unsigned long long>(now - *seen));
  *seen = now;
}

// PrintHistory: the room's messages as `state` holds them (the last kChatMessagesMax, in
// the order every member agrees on, whether they came from the cache, a checkpoint or the
// sync), then switches FollowUpdates to the updates that came after that state.
absl::Status PrintHistory(Session* s, const client::RoomState& state, bool json) {
  room::ChatReducer chat;
  if (!chat.Load(state.state)) return absl::DataLossError("the room's state is not a chat");
  LearnNicks(s, chat);
  for (const auto& m : chat.messages()) PrintLine(*s, m.author, m.text, json);
  s->live_from = state.event_mark;
  return absl::OkStatus();
}

// PublishAndWait: publishes every payload, in order (the client library waits while a
// relay asks it to slow down), then waits until a relay acknowledged them all. Fails only
// when nothing is acknowledged for the timeout.
absl::Status PublishAndWait(Session* s, std::vector<std::vector<uint8_t>> payloads) {
  size_t acked = 0;
  s->client->OnAcked([&acked](const client::RoomRef&, const wire::Hash256&) { ++acked; });
  const size_t sent = payloads.size();
  auto ids = s->client->Publish(s->room, std::move(payloads));
  if (!ids.ok()) return ids.status();
  const auto quiet = std::chrono::milliseconds(s->timeout_ms);
  auto deadline = std::chrono::steady_clock::now() + quiet;
  size_t seen = acked;
  while (acked < sent && std::chrono::steady_clock::now() < deadline) {
    s->client->Poll(20);
    if (acked != seen) {
      seen = acked;
      deadline = std::chrono::steady_clock::now() + quiet;
    }
  }
  if (acked < sent) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no relay acknowledged ", sent - acked, " of ", sent, " update(s) within ",
        s->timeout_ms / 1000, " s; they may still arrive, but are not durable"));
  }
  return absl::OkStatus();
}

// CheckLength: a chat message's text is at most kChatTextBytesMax bytes (the update's
// 64 KiB payload less the chat header).
constexpr size_t kChatTextBytesMax = room::kUpdatePayloadBytesMax - room::kChatPayloadHeaderBytes;
absl::Status CheckLength(const std::string& text) {
  if (text.size() <= kChatTextBytesMax) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "message is ", text.size(), " bytes; the most one message holds is ", kChatTextBytesMax,
      " bytes (64 KiB less its header)"));
}

// JoinPayload: a chat `join` naming our nick, when the room does not know it yet.
void MaybeAnnounce(Session* s, std::vector<std::vector<uint8_t>>* out) {
  const wire::PublicKey& me = s->client->identity().public_key;
  auto it = s->nicks.find(me);
  if (it != s->nicks.end() && it->second == s->nick) return;
  out->push_back(room::ChatPayload(room::ChatOp::kJoin, me, s->nick));
  s->nicks[me] = s->nick;
}

int Post(std::span<const char* const> args) {
  auto flags = Flags::Parse(kClientFlags, args, 2);
  if (!flags.ok()) return Usage("room post", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room post INVITE TEXT [flags]\n\nPublishes TEXT to the "
                "room (TEXT '-': each line of stdin) and exits once a relay\nhas made every "
                "message durable. Exit 1 when none does within --timeout.\n\nflags:\n%s",
                Flags::Help(kClientFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 2) {
    return Usage("room post", absl::InvalidArgumentError("needs INVITE and TEXT"));
  }
  std::vector<std::string> texts;
  if (flags->positional()[1] == "-") {
    char* line = nullptr;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
      std::string t(line, static_cast<size_t>(n));
      while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
      if (!t.empty()) texts.push_back(std::move(t));
    }
    free(line);
  } else {
    texts.push_back(flags->positional()[1]);
  }
  Session s;
  absl::Status st = Open(*flags, flags->positional()[0], &s);
  if (!st.ok()) return Fail("room post", st);
  auto state = CatchUp(&s);  // so that our messages follow the history we saw
  if (!state.ok()) return Fail("room post", state.status());
  if (!state->can_write) {
    return Fail("room post", absl::PermissionDeniedError("this invite is read-only"));
  }
  room::ChatReducer chat;
  if (chat.Load(state->state)) LearnNicks(&s, chat);
  std::vector<std::vector<uint8_t>> payloads;
  MaybeAnnounce(&s, &payloads);
  const wire::PublicKey& me = s.client->identity().public_key;
  for (const std::string& t : texts) {
    if (absl::Status too_long = CheckLength(t); !too_long.ok()) return Fail("room post", too_long);
    payloads.push_back(room::ChatPayload(room::ChatOp::kMessage, me, t));
  }
  st = PublishAndWait(&s, std::move(payloads));
  if (!st.ok()) return Fail("room post", st);
  return 0;
}

// Interrupted: SIGINT or SIGTERM arrived (they are blocked and taken synchronously).
bool Interrupted(const sigset_t& mask) {
  timespec zero{0, 0};
  return sigtimedwait(&mask, nullptr, &zero) > 0;
}

sigset_t BlockStopSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);  // before the client's threads start
  return mask;
}

// FollowUpdates: prints chat messages as their updates arrive, from s->live_from on (the
// history before it comes from the state: PrintHistory), and keeps the nick table
// current. With `print` false it only learns nicks: the state forgets members who left,
// the history does not.
void FollowUpdates(Session* s, bool json, bool show_joins, bool print = true) {
  s->client->OnUpdate([s, json, show_joins, print](const client::UpdateEvent& u) {
    client::ChatLine line;
    if (!client::ParseChat(u.payload, &line)) return;
    if (!print || u.seq < s->live_from) {
      if (line.op == room::ChatOp::kJoin || line.op == room::ChatOp::kNick) {
        s->nicks[line.author] = line.text;
      }
      return;
    }
    switch (line.op) {
      case room::ChatOp::kJoin:
      case room::ChatOp::kNick:
        s->nicks[line.author] = line.text;
        if (show_joins && !u.own) std::printf("* %s is here\n", line.text.c_str());
        break;
      case room::ChatOp::kLeave:
        if (show_joins && !u.own) std::printf("* %s left\n", NickOf(*s, line.author).c_str());
        break;
      case room::ChatOp::kMessage:
        if (!u.own || !show_joins) PrintLine(*s, line.author, line.text, json);
        break;
    }
    std::fflush(stdout);
  });
}

int Read(std::span<const char* const> args) {
  auto flags = Flags::Parse(kClientFlags, args, 1);
  if (!flags.ok()) return Usage("room read", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room read INVITE [flags]\n\nPrints the room's messages "
                "('nick: text', or JSON lines with --json). With --follow it\nkeeps printing "
                "new ones until SIGINT or SIGTERM.\n\nflags:\n%s",
                Flags::Help(kClientFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 1) {
    return Usage("room read", absl::InvalidArgumentError("needs one INVITE"));
  }
  const bool json = flags->Switch("json"), follow = flags->Switch("follow");
  const sigset_t mask = BlockStopSignals();
  Session s;
  absl::Status st = Open(*flags, flags->positional()[0], &s, [&] {
    FollowUpdates(&s, json, /*show_joins=*/false, /*print=*/follow);
  });
  if (!st.ok()) return Fail("room read", st);
  auto state = CatchUp(&s);
  if (!state.ok()) return Fail("room read", state.status());
  st = PrintHistory(&s, *state, json);
  if (!st.ok()) return Fail("room read", st);
  if (!follow) return 0;
  bool was_connected = true;
  uint64_t dropped = s.client->events_dropped();
  while (!Interrupted(mask)) {
    s.client->Poll(100);
    if (s.connected != was_connected) {
      std::fprintf(stderr, s.connected ? "-- connected to the room again\n"
                                       : "-- connection to the room lost; retrying\n");
      was_connected = s.connected;
    }
    ReportDropped(s, &dropped);
  }
  return 0;
}

// Info: the room as this member holds it once caught up, for scripts that compare
// members (equal state hashes: the same state) and for people checking a join.
int Info(std::span<const char* const> args) {
  auto flags = Flags::Parse(kClientFlags, args, 1);
  if (!flags.ok()) return Usage("room info", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room info INVITE [flags]\n\nJoins, catches up, and prints "
                "the room's id, state hash, log size, heads, key\nepoch, access and what it keeps (--json: "
                "one JSON object). Members holding the same updates\nprint the same state "
                "hash.\n\nflags:\n%s",
                Flags::Help(kClientFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 1) {
    return Usage("room info", absl::InvalidArgumentError("needs one INVITE"));
  }
  Session s;
  absl::Status st = Open(*flags, flags->positional()[0], &s);
  if (!st.ok()) return Fail("room info", st);
  auto state = CatchUp(&s);
  if (!state.ok()) return Fail("room info", state.status());
  const std::string room_hex = wire::Hex(s.room.id), hash_hex = wire::Hex(state->state_hash);
  if (flags->Switch("json")) {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key("room").String(room_hex);
    w.Key("state_hash").String(hash_hex);
    w.Key("log_size").Uint(state->log_size);
    w.Key("heads").BeginArray();
    for (const wire::Hash256& h : state->heads) w.String(wire::Hex(h));
    w.EndArray();
    w.Key("epoch").Int(state->epoch);
    w.Key("can_write").Bool(state->can_write);
    w.Key("peers").Uint(state->peers);
    w.Key("from_cache").Uint(state->restored);
    w.Key("entries_held").Uint(state->entries_held);
    w.Key("pruned").Uint(state->pruned);
    w.Key("held_bytes").Uint(state->held_bytes);
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("room        %s\nstate_hash  %s\nlog_size    %llu\nheads       %zu\n"
                "epoch       %lld\naccess      %s\npeers       %u\nfrom_cache  %llu\n"
                "kept        %llu entries, %llu bytes (%llu pruned)\n",
                room_hex.c_str(), hash_hex.c_str(),
                static_cast<unsigned long long>(state->log_size), state->heads.size(),
                static_cast<long long>(state->epoch), state->can_write ? "write" : "read",
                state->peers, static_cast<unsigned long long>(state->restored),
                static_cast<unsigned long long>(state->entries_held),
                static_cast<unsigned long long>(state->held_bytes),
                static_cast<unsigned long long>(state->pruned));
  }
  return 0;
}

// ---- room evict ----

// AdminFile: DIR/rooms/ROOM.admin as `room create` (and each eviction) writes it: "key
// value" lines; one "*_invite" line per member, in order; "evicted HEX" per member gone.
struct AdminFile {
  std::string room_hex;
  std::string admin_secret_hex;
  struct Member {
    std::string label;  // "writer_invite" or "reader_invite"
    std::string text;
    room::Invite invite;
    wire::PublicKey key{};
  };
  std::vector<Member> members;
  std::vector<std::string> evicted;
};

absl::StatusOr<AdminFile> ReadAdminFile(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open the admin key file ", path,
                                            " (pass --admin-key FILE)"));
  }
  AdminFile a;
  char* line = nullptr;
  size_t cap = 0;
  ssize_t n;
  absl::Status bad;
  while ((n = getline(&line, &cap, f)) > 0) {
    std::string t(line, static_cast<size_t>(n));
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    if (t.empty() || t[0] == '#') continue;
    const size_t sp = t.find(' ');
    if (sp == std::string::npos) continue;
    const std::string key = t.substr(0, sp), value = t.substr(sp + 1);
    if (key == "room") a.room_hex = value;
    if (key == "admin_secret") a.admin_secret_hex = value;
    if (key == "evicted") a.evicted.push_back(value);
    if (key.size() > 7 && key.substr(key.size() - 7) == "_invite") {
      auto inv = room::ParseInvite(value);
      if (!inv.ok() || !inv->member_seed) {
        bad = absl::DataLossError(absl::StrCat(path, ": a ", key, " line is not a "
                                               "self-contained invite"));
        continue;
      }
      AdminFile::Member m{key, value, *inv, wire::KeyPair::FromSeed(*inv->member_seed).public_key};
      a.members.push_back(std::move(m));
    }
  }
  free(line);
  std::fclose(f);
  if (!bad.ok()) return bad;
  if (a.room_hex.empty() || a.admin_secret_hex.size() != 128) {
    return absl::DataLossError(absl::StrCat(path, ": not a ringpeer room admin key file"));
  }
  return a;
}

// Defined with `room invite` below.
constexpr size_t kShortInviteCharsMax = 200;
absl::StatusOr<std::vector<std::vector<uint8_t>>> ReadEpochs(const std::string& admin_path,
                                                             const AdminFile& file);
absl::Status WriteEpochs(const std::string& admin_path,
                         const std::vector<std::vector<uint8_t>>& epochs);
std::vector<uint8_t> GenesisOf(const AdminFile& file);
std::string ShortInvite(const wire::Hash256& room_id, uint32_t epoch,
                        const std::array<uint8_t, 32>& seed,
                        const std::vector<base::Endpoint>& bootstrap);
std::optional<room::ContentKey> CurrentKey(const AdminFile& file, const room::Genesis& g,
                                           const std::vector<uint8_t>& record);

// ReissuedInvite: the member's self-contained invite when the room's records still fit
// one (few members, few rotations), else its short invite.
std::string ReissuedInvite(const room::Invite& old, const std::vector<uint8_t>& genesis,
                           const std::vector<std::vector<uint8_t>>& epochs) {
  room::Invite inv;
  inv.room_id = old.room_id;
  inv.epoch = static_cast<uint32_t>(epochs.size() - 1);
  inv.member_seed = old.member_seed;
  inv.bootstrap = old.bootstrap;
  bool fits = epochs.size() <= room::kInviteEpochsMax &&
              genesis.size() <= room::kInviteRecordBytesMax;
  for (const auto& e : epochs) fits = fits && e.size() <= room::kInviteRecordBytesMax;
  if (!fits) return ShortInvite(inv.room_id, inv.epoch, *inv.member_seed, inv.bootstrap);
  inv.genesis = genesis;
  inv.epochs = epochs;
  return room::FormatInvite(inv);
}

int Evict(std::span<const char* const> args) {
  auto flags = Flags::Parse(kEvictFlags, args, 1);
  if (!flags.ok()) return Usage("room evict", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room evict INVITE_OR_MEMBER [flags]\n\nEvicts a member: the "
                "admin signs the next key epoch at the room's current heads,\ngranting a new "
                "write key and content key to every other member of the admin key\nfile, "
                "publishes it through a relay, rewrites the file and prints the re-issued\n"
                "invites. The evicted member's later posts are refused by everyone, and it "
                "cannot\nread what is written after the rotation.\nINVITE_OR_MEMBER: the "
                "member's invite, or the first 8+ hex digits of its member key.\n\nflags:\n%s",
                Flags::Help(kEvictFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 1) {
    return Usage("room evict", absl::InvalidArgumentError("needs one INVITE_OR_MEMBER"));
  }
  if (!wire::InitCrypto()) return Fail("room evict", absl::InternalError("libsodium failed"));
  const std::string target = flags->positional()[0];
  const std::string dir = flags->Value("data-dir").value_or(kDefaultClientDir);
  std::string who;  // hex of the member key, or a prefix of it
  std::string path;
  if (target.rfind("ringpeer:", 0) == 0) {
    auto inv = room::ParseInvite(target);
    if (!inv.ok()) return Usage("room evict", inv.status());
    if (!inv->member_seed) {
      return Usage("room evict", absl::InvalidArgumentError(
                                     "the invite names no member key (not self-contained)"));
    }
    who = wire::Hex(wire::KeyPair::FromSeed(*inv->member_seed).public_key);
    path = absl::StrCat(dir, "/rooms/", wire::Hex(inv->room_id), ".admin");
  } else {
    who = target;
    for (char& c : who) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (who.size() < 8 || who.size() > 64 ||
        who.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Usage("room evict", absl::InvalidArgumentError(
                                     "INVITE_OR_MEMBER: an invite, or 8 to 64 hex digits"));
    }
    if (!flags->Value("admin-key")) {
      return Usage("room evict", absl::InvalidArgumentError(
                                     "a member key needs --admin-key FILE (an invite names "
                                     "its room)"));
    }
  }
  if (auto k = flags->Value("admin-key")) path = *k;
  auto file = ReadAdminFile(path);
  if (!file.ok()) return Fail("room evict", file.status());
  std::array<uint8_t, 32> seed;
  if (!wire::ParseHex32(std::string_view(file->admin_secret_hex).substr(0, 64), &seed)) {
    return Fail("room evict", absl::DataLossError(path + ": bad admin_secret"));
  }
  const wire::KeyPair admin = wire::KeyPair::FromSeed(seed);
  std::vector<room::Invite> stay;
  std::vector<const AdminFile::Member*> staying;
  std::string evicted_hex;
  for (const AdminFile::Member& m : file->members) {
    const std::string hex = wire::Hex(m.key);
    if (hex.rfind(who, 0) == 0) {
      if (!evicted_hex.empty()) {
        return Usage("room evict", absl::InvalidArgumentError(
                                       absl::StrCat("'", who, "' names several members")));
      }
      evicted_hex = hex;
    } else {
      stay.push_back(m.invite);
      staying.push_back(&m);
    }
  }
  if (evicted_hex.empty()) {
    for (const std::string& e : file->evicted) {
      if (e.rfind(who, 0) == 0) {
        return Fail("room evict", absl::FailedPreconditionError(
                                      absl::StrCat("member ", e.substr(0, 16),
                                                   " was already evicted")));
      }
    }
    return Fail("room evict", absl::NotFoundError(
                                  absl::StrCat("no member ", who.substr(0, 16), " in ", path)));
  }
  if (stay.empty()) {
    return Fail("room evict", absl::FailedPreconditionError(
                                  "that is the last member; nobody would stay in the room"));
  }
  // Join through a member that stays (its key only reads the heads here), catch up, so
  // that the rotation names every update written so far.
  Session s;
  absl::Status st = Open(*flags, staying[0]->text, &s);
  if (!st.ok()) return Fail("room evict", st);
  auto state = CatchUp(&s);
  if (!state.ok()) return Fail("room evict", state.status());
  auto epochs = ReadEpochs(path, *file);
  if (!epochs.ok()) return Fail("room evict", epochs.status());
  const std::vector<uint8_t> genesis = GenesisOf(*file);
  room::Genesis g;
  if (room::ParseGenesis(genesis, &g) != room::Verdict::kOk || g.admin != admin.public_key) {
    return Fail("room evict", absl::DataLossError(path + ": no genesis of this admin's room"));
  }
  const int64_t file_epoch = static_cast<int64_t>(epochs->size()) - 1;
  if (state->epoch != file_epoch) {
    return Fail("room evict", absl::FailedPreconditionError(absl::StrCat(
                                  "the room is at key epoch ", state->epoch, ", the admin key "
                                  "file at ", file_epoch, " (an older copy of the file?)")));
  }
  if (state->heads.size() > room::kCheckpointHeadsMax) {
    return Fail("room evict", absl::FailedPreconditionError(absl::StrCat(
                                  "the room has ", state->heads.size(), " heads (a key epoch "
                                  "names at most ", room::kCheckpointHeadsMax, ")")));
  }
  // Key epoch N+1: fresh keys for every member that stays, with the access it had; the
  // old content key sealed under the new one, so that they keep reading the history.
  room::KeyEpochSpec spec;
  spec.room_id = g.room_id;
  spec.epoch = static_cast<uint32_t>(epochs->size());
  wire::RandomBytes(spec.write_seed);
  wire::RandomBytes(spec.content_key);
  spec.previous_key = CurrentKey(*file, g, epochs->back());
  spec.rotation_heads = state->heads;
  for (const AdminFile::Member* m : staying) {
    spec.members.push_back({m->key, m->label == "writer_invite"});
  }
  const uint32_t next_epoch = spec.epoch;
  const std::vector<uint8_t> record =
      room::MakeKeyEpoch(admin, spec, [](std::span<uint8_t> out) { wire::RandomBytes(out); });
  epochs->push_back(record);
  st = s.client->AddKeyEpoch(s.room, record);
  if (!st.ok()) return Fail("room evict", st);
  // The epoch is flooded once; a relay that missed it shows the older epoch in its next
  // RoomHeads (every 2 s) and gets it again. Stay that long.
  s.client->Poll(0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < until) s.client->Poll(50);
  // Rewrite the admin key file: the members that stay with their new invites.
  std::string out = absl::StrCat(
      "# ringpeer room admin key: keep private; it signs key rotations\n", "room ",
      file->room_hex, "\n", "admin_secret ", file->admin_secret_hex, "\n");
  std::vector<std::string> texts;
  for (size_t i = 0; i < staying.size(); ++i) {
    texts.push_back(ReissuedInvite(staying[i]->invite, genesis, *epochs));
    absl::StrAppend(&out, staying[i]->label, " ", texts.back(), "\n");
  }
  for (const std::string& e : file->evicted) absl::StrAppend(&out, "evicted ", e, "\n");
  absl::StrAppend(&out, "evicted ", evicted_hex, "\n");
  st = WriteEpochs(path, *epochs);
  if (st.ok()) st = store::WriteFileAtomically(path, out, 0600);
  if (!st.ok()) {
    std::fprintf(stderr, "ringpeer room evict: the rotation is published, but %s; the "
                         "re-issued invites follow\n", std::string(st.message()).c_str());
  }
  if (flags->Switch("json")) {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key("room").String(file->room_hex);
    w.Key("epoch").Uint(next_epoch);
    w.Key("evicted").String(evicted_hex);
    w.Key("invites").BeginArray();
    for (size_t i = 0; i < staying.size(); ++i) {
      w.BeginObject();
      w.Key("member").String(wire::Hex(staying[i]->key));
      w.Key("write").Bool(staying[i]->label == "writer_invite");
      w.Key("invite").String(texts[i]);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("room        %s\nevicted     %s\nkey epoch   %u\n", file->room_hex.c_str(),
                evicted_hex.c_str(), next_epoch);
    for (size_t i = 0; i < staying.size(); ++i) {
      std::printf("\nre-issued %s for member %s:\n%s\n",
                  staying[i]->label == "writer_invite" ? "writer invite (read and write)"
                                                       : "reader invite (read only)",
                  ShortHex(staying[i]->key).c_str(), texts[i].c_str());
    }
  }
  return st.ok() ? 0 : kExitRuntime;
}

// ---- room invite, room members (issue 17) ----

// The room's key epoch records, all of them, kept beside the admin key file
// (ROOM.epochs: per record a u32 little-endian length and the record): a room of 500
// members outgrows what an invite carries, so the file's invites are short ones and the
// records live here. A file from before (self-contained invites only) has none: the
// first invite's records are used, and the next change writes the file.
std::string EpochsPath(const std::string& admin_path) {
  const size_t dot = admin_path.rfind(".admin");
  return (dot == std::string::npos ? admin_path : admin_path.substr(0, dot)) + ".epochs";
}

absl::StatusOr<std::vector<std::vector<uint8_t>>> ReadEpochs(const std::string& admin_path,
                                                             const AdminFile& file) {
  std::vector<std::vector<uint8_t>> out;
  FILE* f = std::fopen(EpochsPath(admin_path).c_str(), "rb");
  if (f == nullptr) {
    for (const AdminFile::Member& m : file.members) {
      if (!m.invite.epochs.empty()) return m.invite.epochs;
    }
    return absl::NotFoundError(absl::StrCat("no key epochs: ", EpochsPath(admin_path),
                                            " is missing and no invite carries them"));
  }
  uint8_t len[4];
  while (std::fread(len, 1, 4, f) == 4) {
    const size_t n = size_t{len[0]} | size_t{len[1]} << 8 | size_t{len[2]} << 16 |
                     size_t{len[3]} << 24;
    if (n == 0 || n > room::kKeyEpochBytesMax) break;
    std::vector<uint8_t> r(n);
    if (std::fread(r.data(), 1, n, f) != n) break;
    out.push_back(std::move(r));
  }
  std::fclose(f);
  if (out.empty()) return absl::DataLossError(EpochsPath(admin_path) + ": no readable record");
  return out;
}

absl::Status WriteEpochs(const std::string& admin_path,
                         const std::vector<std::vector<uint8_t>>& epochs) {
  std::string data;
  for (const auto& e : epochs) {
    for (int i = 0; i < 4; ++i) data.push_back(static_cast<char>(e.size() >> (8 * i)));
    data.append(reinterpret_cast<const char*>(e.data()), e.size());
  }
  return store::WriteFileAtomically(EpochsPath(admin_path), data, 0600);
}

std::vector<uint8_t> GenesisOf(const AdminFile& file) {
  for (const AdminFile::Member& m : file.members) {
    if (!m.invite.genesis.empty()) return m.invite.genesis;
  }
  return {};
}

// ShortInvite: room id, epoch, member seed and as many bootstrap addresses as keep the
// text within kShortInviteCharsMax (one IPv4 address: 141 characters).
std::string ShortInvite(const wire::Hash256& room_id, uint32_t epoch,
                        const std::array<uint8_t, 32>& seed,
                        const std::vector<base::Endpoint>& bootstrap) {
  room::Invite inv;
  inv.room_id = room_id;
  inv.epoch = epoch;
  inv.member_seed = seed;
  std::string text = room::FormatInvite(inv);
  for (const base::Endpoint& e : bootstrap) {
    inv.bootstrap.push_back(e);
    std::string longer = room::FormatInvite(inv);
    if (longer.size() > kShortInviteCharsMax) break;
    text = std::move(longer);
  }
  return text;
}

// AdminPath: DIR/rooms/ROOM.admin for a ROOM given as an invite or 64 hex digits, or
// --admin-key.
absl::StatusOr<std::string> AdminPath(const Flags& flags, const std::string& command) {
  if (auto k = flags.Value("admin-key")) return *k;
  if (flags.positional().size() != 1) {
    return absl::InvalidArgumentError("needs ROOM (an invite or the room id) or --admin-key");
  }
  std::string room = flags.positional()[0];
  if (room.rfind("ringpeer:", 0) == 0) {
    auto inv = room::ParseInvite(room);
    if (!inv.ok()) return inv.status();
    room = wire::Hex(inv->room_id);
  }
  wire::Hash256 id;
  if (!wire::ParseHex32(room, &id)) {
    return absl::InvalidArgumentError("ROOM: an invite or 64 hex digits");
  }
  (void)command;
  return absl::StrCat(flags.Value("data-dir").value_or(kDefaultClientDir), "/rooms/",
                      wire::Hex(id), ".admin");
}

// CurrentKey: epoch `record`'s content key, opened with the seed of a member it grants.
std::optional<room::ContentKey> CurrentKey(const AdminFile& file, const room::Genesis& g,
                                           const std::vector<uint8_t>& record) {
  for (const AdminFile::Member& m : file.members) {
    const wire::KeyPair me = wire::KeyPair::FromSeed(*m.invite.member_seed);
    room::KeyEpoch e;
    if (room::ParseKeyEpoch(record, g.room_id, g.admin, &me, &e) == room::Verdict::kOk &&
        e.content_key) {
      return e.content_key;
    }
  }
  return std::nullopt;
}

int Members(std::span<const char* const> args) {
  auto flags = Flags::Parse(kMembersFlags, args, 1);
  if (!flags.ok()) return Usage("room members", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room members ROOM [flags]\n\nLists who the room's current "
                "key epoch grants, and with which access (read, or\nread and write), from "
                "the admin key file and the epoch record kept beside it\n(checked against "
                "the room and the admin key). ROOM: an invite or the room id.\n\nflags:\n%s",
                Flags::Help(kMembersFlags).c_str());
    return 0;
  }
  if (!wire::InitCrypto()) return Fail("room members", absl::InternalError("libsodium failed"));
  auto path = AdminPath(*flags, "room members");
  if (!path.ok()) return Usage("room members", path.status());
  auto file = ReadAdminFile(*path);
  if (!file.ok()) return Fail("room members", file.status());
  auto epochs = ReadEpochs(*path, *file);
  if (!epochs.ok()) return Fail("room members", epochs.status());
  room::Genesis g;
  if (room::ParseGenesis(GenesisOf(*file), &g) != room::Verdict::kOk) {
    return Fail("room members", absl::DataLossError(*path + ": no valid genesis"));
  }
  std::vector<room::MemberGrantSpec> grants;
  const room::Verdict v = room::ListGrants(epochs->back(), g.room_id, g.admin, &grants);
  if (v != room::Verdict::kOk) {
    return Fail("room members", absl::DataLossError(absl::StrCat(
                                    "key epoch ", epochs->size() - 1, ": ", room::VerdictName(v))));
  }
  auto label_of = [&](const wire::PublicKey& k) -> std::string {
    for (const AdminFile::Member& m : file->members) {
      if (m.key == k) return m.label == "reader_invite" ? "reader" : "writer";
    }
    return "?";
  };
  size_t writers = 0;
  for (const auto& m : grants) writers += m.write ? 1 : 0;
  if (flags->Switch("json")) {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key("room").String(wire::Hex(g.room_id));
    w.Key("epoch").Uint(epochs->size() - 1);
    w.Key("epoch_bytes").Uint(epochs->back().size());
    w.Key("members").BeginArray();
    for (const auto& m : grants) {
      w.BeginObject();
      w.Key("member").String(wire::Hex(m.member));
      w.Key("access").String(m.write ? "write" : "read");
      w.EndObject();
    }
    w.EndArray();
    w.Key("evicted").BeginArray();
    for (const std::string& e : file->evicted) w.String(e);
    w.EndArray();
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
    return 0;
  }
  std::printf("room        %s\nkey epoch   %zu (%zu bytes)\nmembers     %zu (%zu write, "
              "%zu read)\n\n",
              wire::Hex(g.room_id).c_str(), epochs->size() - 1, epochs->back().size(),
              grants.size(), writers, grants.size() - writers);
  for (const auto& m : grants) {
    std::printf("%s  %-5s  %s\n", wire::Hex(m.member).substr(0, 16).c_str(),
                m.write ? "write" : "read", label_of(m.member).c_str());
  }
  for (const std::string& e : file->evicted) std::printf("%s  evicted\n", e.substr(0, 16).c_str());
  return 0;
}

int InviteCmd(std::span<const char* const> args) {
  auto flags = Flags::Parse(kInviteFlags, args, 1);
  if (!flags.ok()) return Usage("room invite", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer room invite ROOM [flags]\n\nAdds a member: makes a new "
                "member key, signs the next key epoch granting it (and\nevery member of the "
                "admin key file, with the access each has), publishes it\nthrough a relay "
                "and prints the new member's invite: by default a short one\n(room id, "
                "member key, a relay address; at most %zu characters) whose genesis\nand key "
                "epochs come from the relay, checked against the room id and admin key.\n"
                "By default the new member reads the history (the epoch seals the earlier "
                "key);\n--no-history grants only what follows. ROOM: an invite or the room "
                "id.\n\nflags:\n%s",
                kShortInviteCharsMax, Flags::Help(kInviteFlags).c_str());
    return 0;
  }
  if (flags->Switch("read") && flags->Switch("write")) {
    return Usage("room invite", absl::InvalidArgumentError("--read or --write, not both"));
  }
  if (!wire::InitCrypto()) return Fail("room invite", absl::InternalError("libsodium failed"));
  auto path = AdminPath(*flags, "room invite");
  if (!path.ok()) return Usage("room invite", path.status());
  auto file = ReadAdminFile(*path);
  if (!file.ok()) return Fail("room invite", file.status());
  auto epochs = ReadEpochs(*path, *file);
  if (!epochs.ok()) return Fail("room invite", epochs.status());
  const std::vector<uint8_t> genesis = GenesisOf(*file);
  room::Genesis g;
  if (room::ParseGenesis(genesis, &g) != room::Verdict::kOk || file->members.empty()) {
    return Fail("room invite", absl::DataLossError(*path + ": no valid genesis or members"));
  }
  std::array<uint8_t, 32> seed;
  if (!wire::ParseHex32(std::string_view(file->admin_secret_hex).substr(0, 64), &seed)) {
    return Fail("room invite", absl::DataLossError(*path + ": bad admin_secret"));
  }
  const wire::KeyPair admin = wire::KeyPair::FromSeed(seed);
  if (admin.public_key != g.admin) {
    return Fail("room invite", absl::DataLossError(*path + ": the key is not the room's admin"));
  }
  auto boot = Bootstrap(*flags);
  if (!boot.ok()) return Usage("room invite", boot.status());
  std::vector<base::Endpoint> hint = *boot;
  if (hint.empty()) hint = file->members[0].invite.bootstrap;
  // Join as a member of the file, catch up, so that the epoch names every update so far.
  Session s;
  absl::Status st = Open(*flags, file->members[0].text, &s);
  if (!st.ok()) return Fail("room invite", st);
  auto state = CatchUp(&s);
  if (!state.ok()) return Fail("room invite", state.status());
  const uint32_t next = static_cast<uint32_t>(epochs->size());
  if (state->epoch != static_cast<int64_t>(next) - 1) {
    return Fail("room invite", absl::FailedPreconditionError(absl::StrCat(
                                   "the room is at key epoch ", state->epoch, ", the admin "
                                   "files at ", next - 1, " (an older copy of the file?)")));
  }
  if (state->heads.size() > room::kCheckpointHeadsMax ||
      file->members.size() + 1 > room::kMembersMax) {
    return Fail("room invite", absl::FailedPreconditionError(absl::StrCat(
                                   "too many heads or members (at most ", room::kMembersMax,
                                   " members)")));
  }
  const bool write = !flags->Switch("read");
  const bool history = !flags->Switch("no-history");
  room::KeyEpochSpec spec;
  spec.room_id = g.room_id;
  spec.epoch = next;
  wire::RandomBytes(spec.write_seed);
  wire::RandomBytes(spec.content_key);
  if (history) spec.previous_key = CurrentKey(*file, g, epochs->back());
  spec.rotation_heads = state->heads;
  for (const AdminFile::Member& m : file->members) {
    spec.members.push_back({m.key, m.label == "writer_invite"});
  }
  std::array<uint8_t, 32> member_seed;
  wire::RandomBytes(member_seed);
  const wire::KeyPair member = wire::KeyPair::FromSeed(member_seed);
  spec.members.push_back({member.public_key, write});
  std::vector<uint8_t> record = room::MakeKeyEpoch(
      admin, spec, [](std::span<uint8_t> out) { wire::RandomBytes(out); });
  st = s.client->AddKeyEpoch(s.room, record);
  if (!st.ok()) return Fail("room invite", st);
  // Flooded once; a relay that missed it sees our epoch in the next heads (2 s) and asks.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < until) s.client->Poll(50);
  epochs->push_back(record);
  const std::string short_text = ShortInvite(g.room_id, next, member_seed, hint);
  std::string text = short_text;
  if (flags->Switch("long")) {
    room::Invite inv;
    inv.room_id = g.room_id;
    inv.epoch = next;
    inv.member_seed = member_seed;
    inv.genesis = genesis;
    inv.epochs = *epochs;
    inv.bootstrap = hint;
    bool fits = epochs->size() <= room::kInviteEpochsMax &&
                hint.size() <= room::kInviteAddressesMax;
    for (const auto& e : *epochs) fits = fits && e.size() <= room::kInviteRecordBytesMax;
    if (!fits) {
      std::fprintf(stderr, "ringpeer room invite: the room's %zu key epochs (largest %zu bytes) "
                           "do not fit a self-contained invite; printing the short one\n",
                   epochs->size(), std::max_element(epochs->begin(), epochs->end(),
                                                    [](const auto& a, const auto& b) {
                                                      return a.size() < b.size();
                                                    })->size());
    } else {
      text = room::FormatInvite(inv);
    }
  }
  // The epochs first: an admin file naming a member the epochs file lacks would be
  // re-granted from an older epoch.
  st = WriteEpochs(*path, *epochs);
  std::string out = absl::StrCat(
      "# ringpeer room admin key: keep private; it signs key rotations\n", "room ",
      file->room_hex, "\n", "admin_secret ", file->admin_secret_hex, "\n");
  for (const AdminFile::Member& m : file->members) {
    absl::StrAppend(&out, m.label, " ", m.text, "\n");
  }
  absl::StrAppend(&out, write ? "writer_invite " : "reader_invite ", text, "\n");
  for (const std::string& e : file->evicted) absl::StrAppend(&out, "evicted ", e, "\n");
  if (st.ok()) st = store::WriteFileAtomically(*path, out, 0600);
  if (!st.ok()) {
    std::fprintf(stderr, "ringpeer room invite: the epoch is published, but %s\n",
                 std::string(st.message()).c_str());
  }
  if (flags->Switch("json")) {
    admin::JsonWriter w;
    w.BeginObject();
    w.Key("room").String(wire::Hex(g.room_id));
    w.Key("epoch").Uint(next);
    w.Key("member").String(wire::Hex(member.public_key));
    w.Key("write").Bool(write);
    w.Key("history").Bool(history);
    w.Key("members").Uint(spec.members.size());
    w.Key("epoch_bytes").Uint(record.size());
    w.Key("invite").String(text);
    w.EndObject();
    std::printf("%s\n", w.str().c_str());
  } else {
    std::printf("room        %s\nkey epoch   %u (%zu members, %zu bytes)\nmember      %s "
                "(%s%s)\n\ninvite:\n%s\n",
                wire::Hex(g.room_id).c_str(), next, spec.members.size(), record.size(),
                ShortHex(member.public_key).c_str(), write ? "read and write" : "read only",
                history ? "" : ", no history", text.c_str());
  }
  return st.ok() ? 0 : kExitRuntime;
}

}  // namespace

int RoomMain(std::span<const char* const> args) {
  const std::string sub = args.empty() ? "" : args[0];
  std::span<const char* const> rest = args.empty() ? args : args.subspan(1);
  if (sub == "create") return Create(rest);
  if (sub == "post") return Post(rest);
  if (sub == "read") return Read(rest);
  if (sub == "info") return Info(rest);
  if (sub == "evict") return Evict(rest);
  if (sub == "invite") return InviteCmd(rest);
  if (sub == "members") return Members(rest);
  std::fprintf(stderr,
               "usage: ringpeer room create NAME | post INVITE TEXT | read INVITE [--follow]"
               " | info INVITE | evict INVITE | invite ROOM | members ROOM\n"
               "Run 'ringpeer room SUB --help' for the flags of one.\n");
  return sub.empty() || sub == "help" || sub == "--help" ? (sub.empty() ? kExitUsage : 0)
                                                         : kExitUsage;
}

int ChatMain(std::span<const char* const> args) {
  auto flags = Flags::Parse(kClientFlags, args, 1);
  if (!flags.ok()) return Usage("chat", flags.status());
  if (flags->help()) {
    std::printf("usage: ringpeer chat INVITE [flags]\n\nA terminal chat: shows the history, "
                "then new messages as they come; each line you\ntype is sent. /who lists who "
                "is here; /quit or Ctrl-D leaves.\n\nflags:\n%s",
                Flags::Help(kClientFlags).c_str());
    return 0;
  }
  if (flags->positional().size() != 1) {
    return Usage("chat", absl::InvalidArgumentError("needs one INVITE"));
  }
  const sigset_t mask = BlockStopSignals();
  Session s;
  absl::Status st = Open(*flags, flags->positional()[0], &s,
                         [&] { FollowUpdates(&s, /*json=*/false, /*show_joins=*/true); });
  if (!st.ok()) return Fail("chat", st);
  std::fprintf(stderr, "-- joining room %s as %s\n", wire::Hex(s.room.id).substr(0, 16).c_str(),
               s.nick.c_str());
  auto state = CatchUp(&s);
  if (!state.ok()) return Fail("chat", state.status());
  st = PrintHistory(&s, *state, /*json=*/false);
  if (!st.ok()) return Fail("chat", st);
  const bool can_write = state->can_write;
  std::fprintf(stderr, "-- connected; %llu update(s) in the room%s\n",
               static_cast<unsigned long long>(state->log_size),
               can_write ? "" : " (read-only invite)");
  const wire::PublicKey me = s.client->identity().public_key;
  auto send = [&](std::vector<std::vector<uint8_t>> p) {
    auto ids = s.client->Publish(s.room, std::move(p));
    if (!ids.ok()) std::fprintf(stderr, "-- not sent: %s\n", std::string(ids.status().message()).c_str());
  };
  if (can_write) {
    std::vector<std::vector<uint8_t>> p;
    MaybeAnnounce(&s, &p);
    if (!p.empty()) send(std::move(p));
  }
  std::string pending;
  bool was_connected = true, quit = false;
  uint64_t dropped = s.client->events_dropped();
  while (!quit && !Interrupted(mask)) {
    s.client->Poll(0);
    if (s.connected != was_connected) {
      std::fprintf(stderr, s.connected ? "-- connection is back\n"
                                       : "-- connection lost; retrying\n");
      was_connected = s.connected;
    }
    ReportDropped(s, &dropped);
    pollfd in{STDIN_FILENO, POLLIN, 0};
    if (poll(&in, 1, 50) <= 0) continue;
    char buf[1024];
    const ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n <= 0) break;  // Ctrl-D
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line.empty()) continue;
      if (line == "/quit") {
        quit = true;
        break;
      }
      if (line == "/who") {
        auto now = s.client->State(s.room);
        room::ChatReducer chat;
        if (now.ok() && chat.Load(now->state)) {
          std::string who;
          for (const auto& [author, nick] : chat.members()) absl::StrAppend(&who, " ", nick);
          std::fprintf(stderr, "-- here:%s\n", who.c_str());
        }
        continue;
      }
      if (!can_write) {
        std::fprintf(stderr, "-- read-only invite: not sent\n");
        continue;
      }
      if (absl::Status too_long = CheckLength(line); !too_long.ok()) {
        std::fprintf(stderr, "-- not sent: %s\n", std::string(too_long.message()).c_str());
        continue;
      }
      std::vector<std::vector<uint8_t>> p;
      p.push_back(room::ChatPayload(room::ChatOp::kMessage, me, line));
      send(std::move(p));
    }
  }
  if (can_write) {
    std::vector<std::vector<uint8_t>> p;
    p.push_back(room::ChatPayload(room::ChatOp::kLeave, me, ""));
    send(std::move(p));
    s.client->Poll(200);  // give the flood a moment to leave before the node stops
  }
  return 0;
}

}  // namespace ringpeer::cli
