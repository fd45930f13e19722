#include "server/io/acceptor.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <algorithm>

namespace persistd {

Acceptor::Acceptor(int listen_fd) : listen_fd_(listen_fd), reserve_(OpenReserve()) {}

ScopedFd Acceptor::OpenReserve() {
  return ScopedFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

Acceptor::Result Acceptor::Accept(int flags) {
  Result result;
  if (!reserve_.valid()) reserve_ = OpenReserve();
  result.conn.Reset(::accept4(listen_fd_, nullptr, nullptr, flags));
  if (result.conn.valid()) {
    failures_ = 0;
    result.outcome = Outcome::kAccepted;
    return result;
  }
  result.error = errno;
  switch (result.error) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case ECONNABORTED:
      result.outcome = Outcome::kNothing;
      return result;
    case EMFILE:
    case ENFILE:
      break;
    default:
      result.outcome = Outcome::kError;
      return result;
  }
  ++failures_;
  if (!reserve_.valid()) {
    result.outcome = Outcome::kExhausted;
    return result;
  }
  // Free one descriptor, take the connection with it and let it go.
  reserve_.Reset();
  ScopedFd shed(::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC));
  shed.Reset();
  reserve_ = OpenReserve();
  result.outcome = Outcome::kShed;
  return result;
}

std::chrono::milliseconds Acceptor::backoff() const {
  if (failures_ == 0) return std::chrono::milliseconds(0);
  const int shift = std::min(failures_ - 1, 7);  // 10 ms .. 1.28 s
  return std::min(std::chrono::milliseconds(10 << shift),
                  std::chrono::milliseconds(1000));
}

}  // namespace persistd
