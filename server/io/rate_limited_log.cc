#include "server/io/rate_limited_log.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log/log.h"

namespace persistd {

RateLimitedLog::RateLimitedLog(std::chrono::milliseconds interval, Writer out,
                               Clock now)
    : interval_(interval),
      out_(out ? std::move(out) : Writer([](absl::string_view line) {
        log::Write(log::Level::kWarning, line);
      })),
      now_(now ? std::move(now) : Clock(&std::chrono::steady_clock::now)) {}

void RateLimitedLog::Log(absl::string_view line) {
  absl::MutexLock lock(&mu_);
  const auto now = now_();
  if (line == last_) {
    if (now - last_print_ < interval_) {
      ++suppressed_;
      return;
    }
    PrintLocked(line, suppressed_);
  } else {
    FlushLocked();
    PrintLocked(line, 0);
    last_ = std::string(line);
  }
  suppressed_ = 0;
  last_print_ = now;
}

void RateLimitedLog::Flush() {
  absl::MutexLock lock(&mu_);
  FlushLocked();
}

void RateLimitedLog::FlushLocked() {
  if (suppressed_ == 0) return;
  PrintLocked(last_, suppressed_);
  suppressed_ = 0;
  last_print_ = now_();
}

void RateLimitedLog::PrintLocked(absl::string_view line, uint64_t repeats) {
  if (repeats == 0) {
    out_(line);
  } else {
    out_(absl::StrCat(line, " (repeated ", repeats, " times)"));
  }
}

}  // namespace persistd
