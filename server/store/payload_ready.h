// PayloadReady: how a pipeline that reads bytes a client is still writing
// (a streamed dump payload, a remote object's staging file) waits for
// them. The pipelines call it before they read; the service makes it
// (server/service/streamed_payload.h), so the one place that knows about
// the streamed-payload header, dead clients and cancelled calls is there.
#ifndef PERSISTD_SERVER_STORE_PAYLOAD_READY_H_
#define PERSISTD_SERVER_STORE_PAYLOAD_READY_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"

namespace persistd {

// `ready(offset)` returns OK once the descriptor's bytes below `offset`
// are final (at once for 0), or the error that ends the pipeline:
// CancelledError when the client went away or cancelled its call,
// DeadlineExceededError when it stopped writing.
using PayloadReady = std::function<absl::Status(uint64_t offset)>;

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_PAYLOAD_READY_H_
