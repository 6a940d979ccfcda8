// Status propagation for environment and operational errors (STYLE.md section 4).
//
// Debian's abseil 20220623 has absl::Status but no public return-if-error macro, so we
// keep our own. These run on start-up and control paths only, never per packet.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define RP_STATUS_CONCAT_INNER(a, b) a##b
#define RP_STATUS_CONCAT(a, b) RP_STATUS_CONCAT_INNER(a, b)

// RP_RETURN_IF_ERROR(expr): returns the status of `expr` from the enclosing function when
// it is not OK.
#define RP_RETURN_IF_ERROR(expr)                                        \
  do {                                                                  \
    ::absl::Status rp_status_ = (expr);                                 \
    if (!rp_status_.ok()) return rp_status_;                            \
  } while (0)

// RP_ASSIGN_OR_RETURN(lhs, expr): evaluates a StatusOr, returns its status on error,
// otherwise moves the value into `lhs` (which may be a declaration).
#define RP_ASSIGN_OR_RETURN(lhs, expr) \
  RP_ASSIGN_OR_RETURN_IMPL(RP_STATUS_CONCAT(rp_statusor_, __LINE__), lhs, expr)
#define RP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

namespace ringpeer::base {

// ErrnoStatus: an absl::Status for a failed system call, "what: strerror(err)".
inline absl::Status ErrnoStatus(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  switch (err) {
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case EADDRINUSE:
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case ENOENT:
      return absl::NotFoundError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case ENOSYS:
    case EOPNOTSUPP:
      return absl::UnimplementedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace ringpeer::base
