// WaitForPayload makes the PayloadReady (server/store/payload_ready.h) of
// one call whose descriptor its client may still be filling: a streamed
// dump payload (DumpRequest.payload_streamed) or a remote object's staging
// memfd (LoadRequest.fetch_streamed). Both use the same header: the first
// 8 bytes of the descriptor count, little-endian, how many bytes from its
// start are final; the client only ever raises the count.
//
// A waiting pipeline ends when its client is gone either way: its
// descriptor connection closed (the process died: gRPC's sync server does
// not tell a running unary handler), or it cancelled the call (it failed
// on its side, e.g. the object store refused a ranged read), or the count
// stopped moving for a minute.
#ifndef PERSISTD_SERVER_SERVICE_STREAMED_PAYLOAD_H_
#define PERSISTD_SERVER_SERVICE_STREAMED_PAYLOAD_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "server/store/payload_ready.h"

namespace persistd {

// The first bytes of a streamed descriptor, before the data.
inline constexpr uint64_t kStreamHeaderBytes = 64;

// `header`: the descriptor's mapped first 8 bytes, or null when every byte
// is final already (then only the client's liveness is checked). `what`
// names the work in messages ("dump", "fetch of s3://b/k"). `context` and
// `sender_alive` must outlive the returned function.
PayloadReady WaitForPayload(grpc::ServerContext* context,
                            std::shared_ptr<const std::atomic<bool>> sender_alive,
                            const char* header, std::string what);

// `ready`, which also tells the client how far the pipeline has read: each
// offset it asks for beyond the last goes to `report` (for a staging memfd,
// ProgressToPayloadHeader: bytes 8..16 of the header). A fetcher paces its
// ranged reads by it, so staging holds a bounded window of the object.
PayloadReady ReportingReads(PayloadReady ready,
                            std::function<void(uint64_t)> report);

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_STREAMED_PAYLOAD_H_
