// CallLiveness tells whether the client of one call still wants it: a
// long call (a dump, a segment build, a wait for someone else's build)
// asks it as it works, and stops once the answer is no.
//
// A client stops wanting a call in two ways: its process dies -- its
// descriptor connection (DescriptorInbox::Delivery.sender_alive) closes,
// which gRPC's sync server does not report to a unary handler still
// running -- or it cancels the call (KeyboardInterrupt, a failure on its
// side) or lets the call's deadline pass: ServerContext::IsCancelled().
//
// Invariant: IsCancelled() is asked at most every kCancelCheck (it takes a
// lock in gRPC's sync server: asked on every slice and hole of a 600-array
// dump it made the dump 5x slower); the connection's flag, an atomic, on
// every Check.
//
// Not thread-safe: one call's thread asks it.
#ifndef PERSISTD_SERVER_SERVICE_CALL_LIVENESS_H_
#define PERSISTD_SERVER_SERVICE_CALL_LIVENESS_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace persistd {

class CallLiveness {
 public:
  static constexpr absl::Duration kCancelCheck = absl::Milliseconds(10);

  // `context` must outlive this; `sender_alive` is null for a call that
  // sent no descriptor. `what` names the work in messages ("dump", "load
  // of /data/m.pkl").
  CallLiveness(grpc::ServerContext* context,
               std::shared_ptr<const std::atomic<bool>> sender_alive,
               std::string what);

  // OK while the client wants the call; otherwise a CancelledError that
  // says why.
  absl::Status Check();

 private:
  grpc::ServerContext* const context_;
  const std::shared_ptr<const std::atomic<bool>> sender_alive_;
  const std::string what_;
  absl::Time next_check_ = absl::InfinitePast();
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_CALL_LIVENESS_H_
