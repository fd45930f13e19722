#include "server/io/acceptor.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/io/rate_limited_log.h"

namespace persistd {
namespace {

ScopedFd Listen(const std::string& path, sockaddr_un* addr) {
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  snprintf(addr->sun_path, sizeof(addr->sun_path), "%s", path.c_str());
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(addr), sizeof(*addr)),
            0);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  return fd;
}

ScopedFd Connect(const sockaddr_un& addr) {
  ScopedFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr),
                      sizeof(addr)),
            0);
  return fd;
}

bool Readable(int fd) {
  pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

TEST(AcceptorTest, AtTheDescriptorLimitShedsPendingConnectionsInsteadOfSpinning) {
  char dir[] = "/tmp/persistd_acceptor_test.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  sockaddr_un addr;
  ScopedFd listener = Listen(std::string(dir) + "/s", &addr);
  Acceptor acceptor(listener.get());
  ASSERT_TRUE(acceptor.has_reserve());
  std::vector<ScopedFd> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(Connect(addr));

  // Use up every descriptor under a lowered limit.
  rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  rlimit low = old_limit;
  low.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<ScopedFd> filler;
  while (true) {
    ScopedFd fd(::dup(listener.get()));
    if (!fd.valid()) break;
    filler.push_back(std::move(fd));
  }
  ASSERT_EQ(errno, EMFILE);

  // Each pending connection is taken and closed: its client sees the end,
  // and the listening socket stops being readable (no busy loop).
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Readable(listener.get()));
    Acceptor::Result result = acceptor.Accept(SOCK_CLOEXEC);
    EXPECT_EQ(result.outcome, Acceptor::Outcome::kShed);
    EXPECT_EQ(result.error, EMFILE);
    EXPECT_TRUE(acceptor.has_reserve());
  }
  EXPECT_FALSE(Readable(listener.get()));
  EXPECT_EQ(acceptor.backoff(), std::chrono::milliseconds(40));
  for (ScopedFd& client : clients) {
    ASSERT_TRUE(Readable(client.get()));  // closed by the acceptor: EOF
    char byte;
    EXPECT_EQ(::read(client.get(), &byte, 1), 0);
  }

  // With descriptors again, connections are accepted and backoff ends.
  filler.clear();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old_limit), 0);
  ScopedFd client = Connect(addr);
  Acceptor::Result result = acceptor.Accept(SOCK_CLOEXEC);
  EXPECT_EQ(result.outcome, Acceptor::Outcome::kAccepted);
  EXPECT_TRUE(result.conn.valid());
  EXPECT_EQ(acceptor.backoff(), std::chrono::milliseconds(0));
  EXPECT_EQ(acceptor.Accept(SOCK_CLOEXEC).outcome,
            Acceptor::Outcome::kNothing);  // none pending (EAGAIN)
  std::string rm = std::string("rm -rf ") + dir;
  ASSERT_EQ(::system(rm.c_str()), 0);
}

TEST(RateLimitedLogTest, PrintsARepeatedLineOncePerIntervalWithItsCount) {
  std::string out;
  auto now = std::chrono::steady_clock::time_point();
  RateLimitedLog log(
      std::chrono::seconds(1),
      [&out](absl::string_view line) { absl::StrAppend(&out, line, "\n"); },
      [&now] { return now; });
  for (int i = 0; i < 1000; ++i) {
    log.Log("accept: Too many open files");
    now += std::chrono::microseconds(100);  // 1000 lines in 0.1 s
  }
  EXPECT_EQ(out, "accept: Too many open files\n");
  now += std::chrono::seconds(1);
  log.Log("accept: Too many open files");
  log.Log("something else");
  log.Log("something else");
  log.Flush();
  EXPECT_EQ(out,
            "accept: Too many open files\n"
            "accept: Too many open files (repeated 999 times)\n"
            "something else\n"
            "something else (repeated 1 times)\n");
}

}  // namespace
}  // namespace persistd
