// DataDir: the node's data directory — created owner-only, locked against a second node,
// holding the node key.
//
// Control path only (start-up); errors are absl::Status with one sentence an operator can
// act on. The lock (flock on DIR/lock) is held for the life of the DataDir, so two nodes
// can never share a directory, and files such as the control socket may be replaced
// safely by the holder. Not thread-safe; owned by the process's main thread.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "wire/crypto.h"

namespace ringpeer::store {

inline constexpr char kNodeKeyFile[] = "node.key";
inline constexpr char kControlSocketFile[] = "control.sock";
inline constexpr char kLockFile[] = "lock";
inline constexpr char kRoutingTableFile[] = "routing.table";
// The data directory's format marker: "ringpeer-data-dir <version>\n". Written on first use;
// a directory whose marker names another program or a newer version is refused untouched.
inline constexpr char kFormatFile[] = "FORMAT";
inline constexpr uint32_t kDataDirFormatVersion = 1;

class DataDir {
 public:
  // Open: creates `path` (mode 0700) if missing, checks it is a writable directory, checks
  // its format marker (before writing anything) and takes its lock. Errors: not a
  // directory, not writable, in use by another process, another program's or a newer
  // ringpeer's directory.
  static absl::StatusOr<DataDir> Open(const std::string& path);

  DataDir(DataDir&& other) noexcept;
  DataDir& operator=(DataDir&&) = delete;
  DataDir(const DataDir&) = delete;
  ~DataDir();

  // LoadOrCreateNodeKey: reads DIR/node.key, or generates and writes one (mode 0600,
  // written to a temporary file, fsynced and renamed so a crash never leaves half a key).
  // A key readable by others, or a corrupt file, is an error naming the file.
  absl::StatusOr<wire::KeyPair> LoadOrCreateNodeKey() const;

  const std::string& path() const { return path_; }
  std::string File(const char* name) const { return path_ + "/" + name; }

 private:
  DataDir(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}
  std::string path_;
  int lock_fd_ = -1;
};

// WriteFileAtomically: writes `data` to `path` via a temporary file, fsync and rename,
// with `mode`. Reports a full disk as ResourceExhausted; the old file is left intact.
absl::Status WriteFileAtomically(const std::string& path, std::string_view data, int mode);

}  // namespace ringpeer::store
