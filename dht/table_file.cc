#include "dht/table_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "base/status.h"
#include "wire/crypto.h"

namespace ringpeer::dht {
namespace {

constexpr uint8_t kMagic[4] = {'R', 'P', 'R', 'T'};
constexpr size_t kPrefixBytes = 4 + 4 + 4;
constexpr size_t kChecksumBytes = 32;
// A table file larger than this is not ours (kTableFileEntriesMax entries and a bit).
constexpr size_t kFileBytesMax = kPrefixBytes + kTableFileEntriesMax * kTableFileEntryBytes +
                                 kChecksumBytes;

void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint32_t GetU32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

}  // namespace

std::vector<uint8_t> SerializeTable(const std::vector<SavedContact>& entries) {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  PutU32(out, kTableFileVersion);
  PutU32(out, static_cast<uint32_t>(entries.size()));
  for (const SavedContact& s : entries) {
    out.insert(out.end(), s.contact.id.begin(), s.contact.id.end());
    out.push_back(static_cast<uint8_t>(s.contact.addr.family));
    out.insert(out.end(), s.contact.addr.ip.begin(), s.contact.addr.ip.end());
    out.push_back(static_cast<uint8_t>(s.contact.addr.port));
    out.push_back(static_cast<uint8_t>(s.contact.addr.port >> 8));
    out.push_back(s.pinned ? 1 : 0);
  }
  const wire::Hash256 sum = wire::Blake2b256(out);
  out.insert(out.end(), sum.begin(), sum.end());
  return out;
}

absl::StatusOr<std::vector<SavedContact>> ParseTable(const std::vector<uint8_t>& bytes) {
  if (bytes.size() < kPrefixBytes + kChecksumBytes) {
    return absl::DataLossError("routing table file: truncated header");
  }
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return absl::DataLossError("routing table file: bad magic (not a ringpeer table)");
  }
  const uint32_t version = GetU32(bytes.data() + 4);
  if (version != kTableFileVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("routing table file: unknown version ", version));
  }
  const uint32_t count = GetU32(bytes.data() + 8);
  if (count > kTableFileEntriesMax) {
    return absl::DataLossError(absl::StrCat("routing table file: entry count ", count));
  }
  const size_t body = kPrefixBytes + size_t{count} * kTableFileEntryBytes;
  if (bytes.size() != body + kChecksumBytes) {
    return absl::DataLossError(absl::StrCat("routing table file: ", bytes.size(),
                                            " bytes, expected ", body + kChecksumBytes));
  }
  const wire::Hash256 sum = wire::Blake2b256(std::span(bytes.data(), body));
  if (std::memcmp(sum.data(), bytes.data() + body, kChecksumBytes) != 0) {
    return absl::DataLossError("routing table file: checksum mismatch");
  }
  std::vector<SavedContact> out;
  out.reserve(count);
  const uint8_t* p = bytes.data() + kPrefixBytes;
  for (uint32_t i = 0; i < count; ++i, p += kTableFileEntryBytes) {
    SavedContact s;
    std::memcpy(s.contact.id.data(), p, 32);
    const uint8_t family = p[32];
    if (family != 4 && family != 6) {
      return absl::DataLossError(absl::StrCat("routing table file: entry ", i, " family ",
                                              family));
    }
    s.contact.addr.family = static_cast<base::Endpoint::Family>(family);
    std::memcpy(s.contact.addr.ip.data(), p + 33, 16);
    s.contact.addr.port = static_cast<uint16_t>(p[49] | p[50] << 8);
    s.pinned = (p[51] & 1) != 0;
    out.push_back(s);
  }
  return out;
}

std::vector<SavedContact> TableEntries(const RoutingTable& table) {
  std::vector<SavedContact> out;
  table.ForEach([&](const RoutingEntry& e) {
    out.push_back(SavedContact{Contact{e.id, e.addr}, e.pinned});
  });
  return out;
}

absl::Status SaveTableFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return base::ErrnoStatus(errno, "open " + tmp);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return base::ErrnoStatus(err, "write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return base::ErrnoStatus(err, "fsync " + tmp);
  }
  if (::close(fd) != 0) return base::ErrnoStatus(errno, "close " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return base::ErrnoStatus(errno, "rename " + tmp);
  // The rename is durable only once the directory is synced.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return base::ErrnoStatus(errno, "open " + dir);
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0) return base::ErrnoStatus(err, "fsync " + dir);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SavedContact>> LoadTableFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return base::ErrnoStatus(errno, "open " + path);
  std::vector<uint8_t> bytes;
  uint8_t buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return base::ErrnoStatus(err, "read " + path);
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), buf, buf + n);
    if (bytes.size() > kFileBytesMax) {
      ::close(fd);
      return absl::DataLossError("routing table file: too large");
    }
  }
  ::close(fd);
  return ParseTable(bytes);
}

}  // namespace ringpeer::dht
