#include "server/service/call_liveness.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace persistd {

CallLiveness::CallLiveness(grpc::ServerContext* context,
                           std::shared_ptr<const std::atomic<bool>> sender_alive,
                           std::string what)
    : context_(context), sender_alive_(std::move(sender_alive)), what_(std::move(what)) {}

absl::Status CallLiveness::Check() {
  if (sender_alive_ != nullptr && !sender_alive_->load(std::memory_order_acquire)) {
    return absl::CancelledError(absl::StrCat("the ", what_, "'s client process is gone"));
  }
  const absl::Time now = absl::Now();
  if (now < next_check_) return absl::OkStatus();
  next_check_ = now + kCancelCheck;
  if (context_->IsCancelled()) {
    return absl::CancelledError(
        absl::StrCat("the ", what_, " was abandoned by its client"));
  }
  return absl::OkStatus();
}

}  // namespace persistd
