// ring-local status helpers: a stand-in for base/status.h, which does not compile against
// Debian's abseil 20220623. That abseil is built with ABSL_OPTION_USE_STD_STRING_VIEW 0,
// so absl::StrCat does not take the std::string_view that base::ErrnoStatus passes it.
// Once base/status.h converts to absl::string_view, include it instead and delete this.
// Control-path only (start-up, bind, setup); never per packet.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#ifndef RP_RETURN_IF_ERROR
#define RP_STATUS_CONCAT_INNER(a, b) a##b
#define RP_STATUS_CONCAT(a, b) RP_STATUS_CONCAT_INNER(a, b)
// RP_RETURN_IF_ERROR(expr): as in base/status.h.
#define RP_RETURN_IF_ERROR(expr)                \
  do {                                          \
    ::absl::Status rp_status_ = (expr);         \
    if (!rp_status_.ok()) return rp_status_;    \
  } while (0)
// RP_ASSIGN_OR_RETURN(lhs, expr): as in base/status.h.
#define RP_ASSIGN_OR_RETURN(lhs, expr) \
  RP_ASSIGN_OR_RETURN_IMPL(RP_STATUS_CONCAT(rp_statusor_, __LINE__), lhs, expr)
#define RP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
#endif

namespace ringpeer::ring::internal {

// ErrnoStatus: "what: strerror(err)" with the same code mapping as base::ErrnoStatus.
inline absl::Status ErrnoStatus(int err, absl::string_view what) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err));
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

}  // namespace ringpeer::ring::internal
