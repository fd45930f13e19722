#include "server/io/rate_limited_log.h"

#include <utility>

namespace persistd {

RateLimitedLog::RateLimitedLog(std::chrono::milliseconds interval, FILE* out,
                               Clock now)
    : interval_(interval),
      out_(out),
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
    fprintf(out_, "%.*s\n", static_cast<int>(line.size()), line.data());
  } else {
    fprintf(out_, "%.*s (repeated %llu times)\n", static_cast<int>(line.size()),
            line.data(), static_cast<unsigned long long>(repeats));
  }
  fflush(out_);
}

}  // namespace persistd
