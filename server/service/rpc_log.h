// RpcLog writes one debug line per RPC: method, client pid, outcome,
// duration, and request and reply bytes, e.g.
//   rpc Load pid 4242: OK in 3.210 ms (request 131 B, reply 2.1 KiB)
// It is a gRPC server interceptor registered where the server is built,
// so no handler needs a line of its own. At levels above debug it costs
// one Enabled() check per call (CreateServerInterceptor returns nullptr).
// An Attach stream's line comes when the session ends (CANCELLED: its
// client closed it), with the session's length.
//
// Thread-safe (gRPC creates one interceptor per call).
#ifndef PERSISTD_SERVER_SERVICE_RPC_LOG_H_
#define PERSISTD_SERVER_SERVICE_RPC_LOG_H_

#include "grpcpp/support/server_interceptor.h"
#include "server/service/peer_table.h"

namespace persistd {

class RpcLog : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `peers` must outlive the server.
  explicit RpcLog(const PeerTable* peers) : peers_(peers) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  const PeerTable* const peers_;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_RPC_LOG_H_
