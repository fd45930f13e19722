// RateLimitedLog writes warnings to the daemon's log (common/log), printing a line that repeats at most
// once per interval: the repeats in between are counted and reported with
// "(repeated N times)" when the line is printed next, when another line
// comes, or on Flush(). A condition that recurs thousands of times a second
// (a full descriptor table, a flood of refused peers) then costs a line a
// second, not a disk.
//
// Invariant: suppressed_ counts the Log(last_) calls since last_ was last
// printed; last_print_ is when that was.
//
// Thread-safe.
#ifndef PERSISTD_SERVER_IO_RATE_LIMITED_LOG_H_
#define PERSISTD_SERVER_IO_RATE_LIMITED_LOG_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace persistd {

class RateLimitedLog {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  // Takes one line, without its newline.
  using Writer = std::function<void(absl::string_view)>;

  // Writes to the log at level warning; `out` and `now` are for tests.
  explicit RateLimitedLog(
      std::chrono::milliseconds interval = std::chrono::seconds(1),
      Writer out = nullptr, Clock now = nullptr);
  RateLimitedLog(const RateLimitedLog&) = delete;
  RateLimitedLog& operator=(const RateLimitedLog&) = delete;

  // Logs `line` (without its newline).
  void Log(absl::string_view line);
  // Reports the repeats of the last line not printed yet, if any.
  void Flush();

 private:
  void FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PrintLocked(absl::string_view line, uint64_t repeats)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::chrono::milliseconds interval_;
  const Writer out_;
  const Clock now_;

  absl::Mutex mu_;
  std::string last_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_print_ ABSL_GUARDED_BY(mu_);
  uint64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_RATE_LIMITED_LOG_H_
