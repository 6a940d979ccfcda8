// Goal: the embedding API works end to end over real sockets on 127.0.0.1: a relay node
// (LMDB room store) and two clients in one process; a writer's updates reach a reader
// that joins later, as callbacks and as state; a reader cannot write; acks come back.
// Method: a one-shard relay Node with room_store_dir in a temporary directory, a room
// made by CreateRoom, clients started on port 0; every wait polls with a deadline.
#include "node/client/client.h"

#include <stdlib.h>

#include <chrono>
#include <filesystem>

#include "gtest/gtest.h"

namespace ringpeer::client {
namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/rp-client-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// PollUntil: polls `c` until `done` holds, at most `timeout_ms`.
template <typename F>
bool PollUntil(Client& c, F done, int timeout_ms = 10000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    c.Poll(20);
  }
  return true;
}

std::vector<uint8_t> Chat(const Client& c, std::string_view text) {
  return room::ChatPayload(room::ChatOp::kMessage, c.identity().public_key, text);
}

TEST(Client, WriterToLateReaderThroughRelay) {
  ASSERT_TRUE(wire::InitCrypto());
  TempDir tmp;
  shard::NodeConfig rc;
  rc.listen = {*base::Endpoint::Parse("127.0.0.1:0")};
  rc.room_store_dir = tmp.path + "/relay";
  std::filesystem::create_directories(rc.room_store_dir);
  auto relay = shard::Node::Create(rc, wire::KeyPair::Generate());
  ASSERT_TRUE(relay.ok()) << relay.status();
  ASSERT_TRUE((*relay)->Start().ok());
  const base::Endpoint relay_addr = (*relay)->addresses()[0];

  auto made = CreateRoom("test", {relay_addr});
  ASSERT_TRUE(made.ok()) << made.status();
  ClientOptions o;
  o.listen = *base::Endpoint::Parse("127.0.0.1:0");
  o.data_dir = tmp.path + "/writer";
  auto writer = Client::Start(o);
  ASSERT_TRUE(writer.ok()) << writer.status();
  Client& w = **writer;
  bool connected = false;
  size_t acked = 0;
  w.OnConnection([&](const RoomRef&, bool up) { connected = up; });
  w.OnAcked([&](const RoomRef&, const wire::Hash256&) { ++acked; });
  auto room = w.Join(room::FormatInvite(made->writer));
  ASSERT_TRUE(room.ok()) << room.status();
  EXPECT_EQ(room->id, made->room_id);
  ASSERT_TRUE(PollUntil(w, [&] { return connected; })) << "writer never connected";
  std::vector<std::vector<uint8_t>> texts;
  for (int i = 0; i < 5; ++i) texts.push_back(Chat(w, "hello " + std::to_string(i)));
  auto ids = w.Publish(*room, std::move(texts));
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 5u);
  EXPECT_TRUE(PollUntil(w, [&] { return acked == 5; })) << "acks: " << acked;

  o.data_dir = tmp.path + "/reader";
  auto reader = Client::Start(o);
  ASSERT_TRUE(reader.ok()) << reader.status();
  Client& r = **reader;
  std::vector<std::string> seen;
  r.OnUpdate([&](const UpdateEvent& u) {
    ChatLine line;
    if (ParseChat(u.payload, &line)) seen.push_back(line.text);
  });
  auto rroom = r.Join(room::FormatInvite(made->reader));
  ASSERT_TRUE(rroom.ok()) << rroom.status();
  EXPECT_TRUE(PollUntil(r, [&] { return seen.size() == 5; })) << seen.size();
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen[0], "hello 0");
  EXPECT_EQ(seen[4], "hello 4");
  auto st = r.State(*rroom);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->log_size, 5u);
  EXPECT_FALSE(st->can_write);
  room::ChatReducer chat;
  ASSERT_TRUE(chat.Load(st->state));
  ASSERT_EQ(chat.messages().size(), 5u);
  EXPECT_EQ(chat.messages()[2].text, "hello 2");
  // A read-only invite cannot write.
  EXPECT_FALSE(r.Publish(*rroom, Chat(r, "nope")).ok());
  (*relay)->Stop();
}

TEST(Client, ClearErrors) {
  ASSERT_TRUE(wire::InitCrypto());
  TempDir tmp;
  ClientOptions o;
  o.listen = *base::Endpoint::Parse("127.0.0.1:0");
  o.data_dir = tmp.path + "/c";
  auto c = Client::Start(o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->Join("hello").status().message(), "invite: does not start with 'ringpeer:'");
  auto made = CreateRoom("x", {});
  ASSERT_TRUE(made.ok());
  EXPECT_NE((*c)->Join(room::FormatInvite(made->writer)).status().message().find("--bootstrap"),
            std::string_view::npos);
  // A second client on the same directory is refused (the directory is locked).
  EXPECT_FALSE(Client::Start(o).ok());
}

}  // namespace
}  // namespace ringpeer::client
