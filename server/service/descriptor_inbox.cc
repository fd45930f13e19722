#include "server/service/descriptor_inbox.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/io/errno_status.h"
#include "common/io/fd_passing.h"
#include "common/log/log.h"
#include "server/io/acceptor.h"
#include "server/io/rate_limited_log.h"
#include "server/io/unix_socket.h"

namespace persistd {

namespace {

// Unclaimed descriptors are closed after this long (a client that died
// between sending them and making its call).
constexpr absl::Duration kTokenLifetime = absl::Seconds(60);
// Open descriptors held for calls not made yet, over all clients.
constexpr size_t kMaxPendingFds = 4096;
// Client connections at once (one per client process).
constexpr size_t kMaxConnections = 1024;

}  // namespace

absl::StatusOr<std::unique_ptr<DescriptorInbox>> DescriptorInbox::Bind(
    const std::string& socket_path) {
  absl::StatusOr<ScopedFd> fd = ListenUnix(socket_path);
  if (!fd.ok()) return fd.status();
  ScopedFd wake(::eventfd(0, EFD_CLOEXEC));
  if (!wake.valid()) return ErrnoStatus("eventfd", socket_path, errno);
  return std::unique_ptr<DescriptorInbox>(
      new DescriptorInbox(socket_path, *std::move(fd), std::move(wake)));
}

DescriptorInbox::~DescriptorInbox() {
  Stop();
  ::unlink(socket_path_.c_str());
}

void DescriptorInbox::Start() { thread_ = std::thread([this] { Loop(); }); }

void DescriptorInbox::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
  thread_.join();
  absl::MutexLock lock(&mu_);
  pending_.clear();
  pending_fds_ = 0;
}

absl::StatusOr<DescriptorInbox::Delivery> DescriptorInbox::Take(
    const std::string& token, size_t count, absl::Duration wait) {
  if (token.empty()) {
    return absl::InvalidArgumentError("the request names no descriptor token");
  }
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + wait;
  auto it = pending_.find(token);
  while (it == pending_.end()) {
    if (arrived_.WaitWithDeadline(&mu_, deadline)) {
      it = pending_.find(token);
      if (it == pending_.end()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "no descriptors arrived for this call on ", socket_path_,
            " (the client must send them there before its request)"));
      }
      break;
    }
    it = pending_.find(token);
  }
  Delivery delivery{std::move(it->second.fds), std::move(it->second.sender_alive)};
  pending_fds_ -= delivery.fds.size();
  pending_.erase(it);
  if (delivery.fds.size() != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the call expects ", count, " descriptors, the client sent ",
        delivery.fds.size()));
  }
  return delivery;
}

void DescriptorInbox::ExpireLocked(absl::Time now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.received > kTokenLifetime) {
      pending_fds_ -= it->second.fds.size();
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

bool DescriptorInbox::Drain(int conn, const std::shared_ptr<std::atomic<bool>>& alive) {
  for (;;) {
    absl::StatusOr<FdMessage> message = ReceiveFds(conn);
    if (absl::IsUnavailable(message.status())) return true;  // nothing more now
    if (!message.ok() || message->fds.empty()) return false;  // gone, or abusive
    absl::MutexLock lock(&mu_);
    if (pending_fds_ + message->fds.size() > kMaxPendingFds ||
        pending_.count(message->tag) != 0) {
      return false;
    }
    pending_fds_ += message->fds.size();
    pending_[message->tag] = Pending{std::move(message->fds), absl::Now(), alive};
    arrived_.SignalAll();
  }
}

void DescriptorInbox::Loop() {
  const uid_t self = ::geteuid();
  Acceptor acceptor(listen_fd_.get());
  RateLimitedLog log;
  // A client connection, and the flag its calls watch: false once it ends.
  struct Conn {
    ScopedFd fd;
    std::shared_ptr<std::atomic<bool>> alive;
  };
  std::vector<Conn> conns;
  // Out of descriptors, the listening socket rests until then; the client
  // connections are still served meanwhile (they free descriptors).
  auto accept_after = std::chrono::steady_clock::now();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const bool listening = now >= accept_after;
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_.get(), POLLIN, 0});
    fds.push_back({listening ? listen_fd_.get() : -1, POLLIN, 0});
    for (const Conn& c : conns) fds.push_back({c.fd.get(), POLLIN, 0});
    const int timeout_ms =
        listening ? 1000
                  : static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         accept_after - now)
                                         .count()) + 1;
    int ready = ::poll(fds.data(), fds.size(), timeout_ms);
    {
      absl::MutexLock lock(&mu_);
      ExpireLocked(absl::Now());
    }
    if (ready < 0) {
      if (errno == EINTR) continue;
      log::Error("descriptor socket: poll: %s; no descriptors are received",
                 strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;
    // Connections first, by index into the vector as it was polled.
    std::vector<Conn> kept;
    kept.reserve(conns.size());
    for (size_t i = 0; i < conns.size(); ++i) {
      const short events = fds[2 + i].revents;
      bool keep = true;
      if ((events & POLLIN) != 0) {
        keep = Drain(conns[i].fd.get(), conns[i].alive);
      } else if ((events & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
        keep = false;
      }
      // Dropped: hung up, errored or abusive (closed with the old vector).
      if (keep) {
        kept.push_back(std::move(conns[i]));
      } else {
        conns[i].alive->store(false, std::memory_order_release);
      }
    }
    conns = std::move(kept);
    if ((fds[1].revents & POLLIN) == 0) continue;
    Acceptor::Result accepted = acceptor.Accept(SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (accepted.outcome == Acceptor::Outcome::kNothing) continue;
    if (accepted.outcome != Acceptor::Outcome::kAccepted) {
      log.Log(absl::StrCat("descriptor socket: accept: ",
                           strerror(accepted.error),
                           " (at the descriptor limit? raise ulimit -n)"));
      accept_after = std::chrono::steady_clock::now() +
                     std::max(acceptor.backoff(), std::chrono::milliseconds(10));
      continue;
    }
    log.Flush();
    absl::StatusOr<PeerCredentials> peer = PeerOf(accepted.conn.get());
    if (!peer.ok() || !TrustedPeer(peer->uid, self) ||
        conns.size() >= kMaxConnections) {
      continue;  // closed by accepted.conn
    }
    conns.push_back(Conn{std::move(accepted.conn), std::make_shared<std::atomic<bool>>(true)});
  }
}

}  // namespace persistd
