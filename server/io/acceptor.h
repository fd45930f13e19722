// Acceptor accepts connections on a listening socket and keeps the daemon
// responsive when the process runs out of file descriptors.
//
// accept(2) fails with EMFILE (or ENFILE) at RLIMIT_NOFILE, but leaves the
// connection in the backlog, so poll(2) reports the socket readable again
// at once: a naive loop spins at 100% CPU and logs a line per turn while
// clients wait in the backlog forever. Acceptor uses the reserve-descriptor
// technique of nginx and libuv: it keeps one spare descriptor (/dev/null)
// open, and when accept fails for lack of descriptors it closes the spare,
// accepts the pending connection and closes it at once (its client sees the
// connection end instead of hanging), and reopens the spare. The backlog
// drains, poll blocks again, and the caller backs off for backoff() before
// the next accept, so even a flood of connections costs little CPU.
//
// Invariant: reserve_ is open unless reopening it failed (another thread
// took the descriptor); then the next Accept tries again. failures_ counts
// the accepts in a row that failed for lack of descriptors.
//
// Not thread-safe: one thread accepts.
#ifndef PERSISTD_SERVER_IO_ACCEPTOR_H_
#define PERSISTD_SERVER_IO_ACCEPTOR_H_

#include <chrono>

#include "common/io/scoped_fd.h"

namespace persistd {

class Acceptor {
 public:
  enum class Outcome {
    kAccepted,   // conn holds the new connection
    kNothing,    // no connection was pending (EAGAIN, EINTR, ECONNABORTED)
    kShed,       // out of descriptors: a pending connection was closed
    kExhausted,  // out of descriptors and no spare to shed with: wait
    kError,      // another error (error): wait, then try again
  };
  struct Result {
    Outcome outcome = Outcome::kNothing;
    ScopedFd conn;
    int error = 0;  // errno for kShed, kExhausted and kError
  };

  // `listen_fd` is a listening socket that outlives the Acceptor.
  explicit Acceptor(int listen_fd);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Accepts one connection with accept4(2) `flags`.
  Result Accept(int flags);

  // How long to wait before the next Accept: zero after an accept that
  // did not run out of descriptors, else 10 ms doubling per failure in a
  // row, up to 1 s.
  std::chrono::milliseconds backoff() const;

  bool has_reserve() const { return reserve_.valid(); }

 private:
  static ScopedFd OpenReserve();

  const int listen_fd_;
  ScopedFd reserve_;
  int failures_ = 0;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_ACCEPTOR_H_
