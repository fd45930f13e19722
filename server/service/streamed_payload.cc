#include "server/service/streamed_payload.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/service/call_liveness.h"

namespace persistd {

// The count is polled, backing off to 1 ms, while the pipeline has nothing
// to do; the client's liveness is checked on every call (CallLiveness
// keeps that cheap).
PayloadReady WaitForPayload(grpc::ServerContext* context,
                            std::shared_ptr<const std::atomic<bool>> sender_alive,
                            const char* header, std::string what) {
  constexpr absl::Duration kStall = absl::Seconds(60);
  auto liveness =
      std::make_shared<CallLiveness>(context, std::move(sender_alive), what);
  return [liveness, header, what = std::move(what),
          kStall](uint64_t offset) -> absl::Status {
    absl::Duration pause = absl::Microseconds(20);
    absl::Time progress = absl::InfinitePast();
    uint64_t seen = 0;
    for (;;) {
      const absl::Time now = absl::Now();
      absl::Status alive = liveness->Check();
      if (!alive.ok()) return alive;
      if (header == nullptr) return absl::OkStatus();
      const uint64_t ready = __atomic_load_n(
          reinterpret_cast<const uint64_t*>(header), __ATOMIC_ACQUIRE);
      if (ready >= offset) return absl::OkStatus();
      if (ready != seen || progress == absl::InfinitePast()) {
        seen = ready;
        progress = now;
      } else if (now - progress > kStall) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the client stopped filling the ", what, "'s bytes at byte ", ready,
            " for ", absl::FormatDuration(kStall)));
      }
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(1));
    }
  };
}

PayloadReady ReportingReads(PayloadReady ready,
                            std::function<void(uint64_t)> report) {
  // A pipeline calls its PayloadReady from one thread at a time.
  auto highest = std::make_shared<uint64_t>(0);
  return [ready = std::move(ready), report = std::move(report),
          highest](uint64_t offset) -> absl::Status {
    if (offset > *highest) {
      *highest = offset;
      report(offset);
    }
    return ready(offset);
  };
}

}  // namespace persistd
