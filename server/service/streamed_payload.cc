#include "server/service/streamed_payload.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace persistd {

// The count is polled, backing off to 1 ms, while the pipeline has nothing
// to do. IsCancelled() takes a lock in gRPC's sync server: asked on every
// slice and hole of a 600-array dump it made the dump 5x slower, so it is
// asked at most every 10 ms.
PayloadReady WaitForPayload(grpc::ServerContext* context,
                            std::shared_ptr<const std::atomic<bool>> sender_alive,
                            const char* header, std::string what) {
  constexpr absl::Duration kStall = absl::Seconds(60);
  constexpr absl::Duration kCancelCheck = absl::Milliseconds(10);
  auto next_check = std::make_shared<absl::Time>(absl::InfinitePast());
  return [context, sender_alive = std::move(sender_alive), header,
          what = std::move(what), kStall, kCancelCheck,
          next_check](uint64_t offset) -> absl::Status {
    absl::Duration pause = absl::Microseconds(20);
    absl::Time progress = absl::InfinitePast();
    uint64_t seen = 0;
    for (;;) {
      const absl::Time now = absl::Now();
      if (!sender_alive->load(std::memory_order_acquire)) {
        return absl::CancelledError(
            absl::StrCat("the ", what, "'s client process is gone"));
      }
      if (now >= *next_check) {
        if (context->IsCancelled()) {
          return absl::CancelledError(
              absl::StrCat("the ", what, " was abandoned by its client"));
        }
        *next_check = now + kCancelCheck;
      }
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

}  // namespace persistd
