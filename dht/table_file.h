// The routing table's file: what a restarted node rejoins from without its bootstrap peers.
//
// Format (little-endian), version 1:
//   magic "RPRT" | u32 version | u32 count | count x entry | BLAKE2b-256 of all before it
//   entry: 32-byte id | u8 family (4 or 6) | 16-byte ip | u16 port | u8 flags (1 = pinned)
// Parsing reports what is wrong (truncated, bad magic, unknown version, checksum
// mismatch, bad entry) as an absl::Status, so that an operator sees why a table was
// ignored; a corrupt file is never half-read.
// Control path (start-up and periodic save); allocates. Pure functions except
// SaveTableFile/LoadTableFile, which touch only the path they are given. Thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dht/routing_table.h"

namespace ringpeer::dht {

struct SavedContact {
  Contact contact;
  bool pinned = false;
};

inline constexpr uint32_t kTableFileVersion = 1;
inline constexpr size_t kTableFileEntryBytes = 32 + 1 + 16 + 2 + 1;
// Far above any table we build (32 buckets x 20); a larger count is corruption.
inline constexpr uint32_t kTableFileEntriesMax = 65536;

// SerializeTable: the file's bytes for `entries`.
std::vector<uint8_t> SerializeTable(const std::vector<SavedContact>& entries);
// ParseTable: the entries in `bytes`, or an error saying what is wrong with them.
absl::StatusOr<std::vector<SavedContact>> ParseTable(const std::vector<uint8_t>& bytes);
// TableEntries: the current routing table as SavedContacts.
std::vector<SavedContact> TableEntries(const RoutingTable& table);

// SaveTableFile: writes `bytes` to `path` atomically: a temporary file beside it, fsync,
// rename over `path`, fsync of the directory. A crash leaves the old file or the new one.
absl::Status SaveTableFile(const std::string& path, const std::vector<uint8_t>& bytes);
// LoadTableFile: reads and parses `path`. NotFound when there is no file (first start).
absl::StatusOr<std::vector<SavedContact>> LoadTableFile(const std::string& path);

}  // namespace ringpeer::dht
