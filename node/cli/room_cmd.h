// The `ringpeer` commands for rooms (issue 5, item 8), each an embedded client
// (node/client) with its own data directory:
//
//   ringpeer room create NAME       make a room offline: admin key file + invites
//   ringpeer room post INVITE TEXT  publish TEXT (or each stdin line for "-"); waits for a
//                                   relay's durable ack
//   ringpeer room read INVITE       print the history; --follow keeps printing
//   ringpeer room evict INVITE      the admin rotates the keys without that member and
//                                   prints the re-issued invites of those who stay
//   ringpeer chat INVITE            a terminal chat
//
// Control path; called from main() on the main thread.
#pragma once

#include <span>

namespace ringpeer::cli {

// RoomMain: `ringpeer room SUB ...` (args after "room"). Returns the exit code.
int RoomMain(std::span<const char* const> args);
// ChatMain: `ringpeer chat INVITE ...` (args after "chat").
int ChatMain(std::span<const char* const> args);

}  // namespace ringpeer::cli
