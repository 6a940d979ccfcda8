#include "node/store/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"

namespace ringpeer::store {
namespace {

constexpr char kKeyHeader[] = "ringpeer-node-key v1";
constexpr char kFormatName[] = "ringpeer-data-dir ";

// CheckFormat: reads DIR/FORMAT if present. Sets *present; refuses another program's
// marker or a newer version without touching anything.
absl::Status CheckFormat(const std::string& dir, bool* present) {
  const std::string file = dir + "/" + kFormatFile;
  *present = false;
  const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoStatus(errno, absl::StrCat("cannot read ", file));
  }
  char buf[128];
  const ssize_t n = read(fd, buf, sizeof(buf));
  const int err = errno;
  close(fd);
  if (n < 0) return base::ErrnoStatus(err, absl::StrCat("cannot read ", file));
  *present = true;
  std::string line(buf, static_cast<size_t>(n));
  line = line.substr(0, line.find('\n'));
  const std::string prefix = kFormatName;
  uint32_t version = 0;
  if (line.compare(0, prefix.size(), prefix) != 0 ||
      !absl::SimpleAtoi(line.substr(prefix.size()), &version)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data directory ", dir, " belongs to another program (", file, " reads '",
        line.substr(0, 60), "'); refusing to use it"));
  }
  if (version > kDataDirFormatVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "data directory %s was written by a newer ringpeer (format %d; this build reads up "
        "to %d); refusing to touch it",
        dir, version, kDataDirFormatVersion));
  }
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      partial = path.substr(0, i);
      if (mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
        return base::ErrnoStatus(errno, absl::StrCat("cannot create data directory ", partial));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DataDir> DataDir::Open(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("data directory: empty path");
  RP_RETURN_IF_ERROR(MakeDirs(path));
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return base::ErrnoStatus(errno, absl::StrCat("data directory ", path));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data directory ", path, " is not a directory"));
  }
  if (access(path.c_str(), W_OK | X_OK) != 0) {
    return base::ErrnoStatus(errno, absl::StrCat("data directory ", path, " is not writable"));
  }
  bool marked = false;
  RP_RETURN_IF_ERROR(CheckFormat(path, &marked));
  const std::string lock_path = path + "/" + kLockFile;
  int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return base::ErrnoStatus(errno, absl::StrCat("data directory ", path, " is not writable"));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", path, " is in use by another ringpeer process"));
    }
    return base::ErrnoStatus(err, absl::StrCat("cannot lock ", lock_path));
  }
  DataDir dir(path, fd);
  if (!marked) {
    RP_RETURN_IF_ERROR(WriteFileAtomically(dir.File(kFormatFile),
                                           absl::StrCat(kFormatName, kDataDirFormatVersion, "\n"),
                                           0600));
  }
  return dir;
}

DataDir::DataDir(DataDir&& other) noexcept
    : path_(std::move(other.path_)), lock_fd_(other.lock_fd_) {
  other.lock_fd_ = -1;
}

DataDir::~DataDir() {
  if (lock_fd_ >= 0) close(lock_fd_);
}

absl::Status WriteFileAtomically(const std::string& path, std::string_view data, int mode) {
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return base::ErrnoStatus(errno, absl::StrCat("cannot write ", tmp));
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      close(fd);
      unlink(tmp.c_str());
      if (err == ENOSPC || err == EDQUOT) {
        return absl::ResourceExhaustedError(absl::StrCat("cannot write ", path, ": disk full"));
      }
      return base::ErrnoStatus(err, absl::StrCat("cannot write ", tmp));
    }
    off += static_cast<size_t>(n);
  }
  if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
    const int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return base::ErrnoStatus(err, absl::StrCat("cannot write ", tmp));
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return base::ErrnoStatus(err, absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<wire::KeyPair> DataDir::LoadOrCreateNodeKey() const {
  const std::string path = File(kNodeKeyFile);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return base::ErrnoStatus(errno, absl::StrCat("node key ", path));
    std::array<uint8_t, 32> seed;
    wire::RandomBytes(seed);
    const std::string text = absl::StrCat(kKeyHeader, "\nseed ", wire::Hex(seed), "\n");
    RP_RETURN_IF_ERROR(WriteFileAtomically(path, text, 0600));
    return wire::KeyPair::FromSeed(seed);
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "node key %s is readable by others (mode %04o); run: chmod 600 %s", path,
        st.st_mode & 07777, path));
  }
  std::ifstream in(path);
  std::string header, word, hex;
  if (!in || !std::getline(in, header)) {
    return base::ErrnoStatus(errno, absl::StrCat("cannot read node key ", path));
  }
  in >> word >> hex;
  std::array<uint8_t, 32> seed;
  if (header != kKeyHeader || word != "seed" || !wire::ParseHex32(hex, &seed)) {
    return absl::DataLossError(absl::StrCat(
        "node key ", path, " is corrupt (expected '", kKeyHeader,
        "' then 'seed <64 hex digits>'); restore it from a backup, or delete it to make this "
        "node a new identity"));
  }
  return wire::KeyPair::FromSeed(seed);
}

}  // namespace ringpeer::store
