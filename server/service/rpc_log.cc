#include "server/service/rpc_log.h"

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/log/log.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"

namespace persistd {
namespace {

using grpc::experimental::InterceptionHookPoints;

// "/persistd.v1.Persistd/Load" -> "Load".
absl::string_view ShortName(const char* method) {
  absl::string_view name = method == nullptr ? "?" : method;
  const size_t slash = name.rfind('/');
  return slash == absl::string_view::npos ? name : name.substr(slash + 1);
}

std::string Bytes(uint64_t n) {
  if (n < 1024) return absl::StrFormat("%d B", n);
  if (n < (uint64_t{1} << 20)) return absl::StrFormat("%.1f KiB", n / 1024.0);
  return absl::StrFormat("%.1f MiB", n / 1048576.0);
}

// The size of a message a hook exposes. gRPC hands the handler's own
// request or reply object as void*; every message of this service is a
// generated protobuf class, which derives from MessageLite alone (so the
// pointer is also one to its MessageLite base).
uint64_t SizeOf(const void* message) {
  if (message == nullptr) return 0;
  return static_cast<const google::protobuf::MessageLite*>(message)->ByteSizeLong();
}

class Logged : public grpc::experimental::Interceptor {
 public:
  Logged(grpc::experimental::ServerRpcInfo* info, const PeerTable* peers)
      : info_(info), peers_(peers), started_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE)) {
      request_bytes_ += SizeOf(methods->GetRecvMessage());
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      const void* message = methods->GetSendMessage();
      if (message != nullptr) {
        reply_bytes_ += SizeOf(message);
      } else if (grpc::ByteBuffer* serialized = methods->GetSerializedSendMessage()) {
        reply_bytes_ += serialized->Length();
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      Write(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  void Write(const grpc::Status& status) {
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - started_)
                          .count();
    const int pid = peers_->PidOf(info_->server_context()->peer());
    // gRPC's codes are absl's.
    std::string outcome = absl::StatusCodeToString(
        static_cast<absl::StatusCode>(status.error_code()));
    if (!status.error_message().empty()) {
      absl::StrAppend(&outcome, " (", status.error_message(), ")");
    }
    log::Debug("rpc %s pid %d: %s in %.3f ms (request %s, reply %s)",
               ShortName(info_->method()), pid, outcome, ms, Bytes(request_bytes_),
               Bytes(reply_bytes_));
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const PeerTable* const peers_;
  const std::chrono::steady_clock::time_point started_;
  uint64_t request_bytes_ = 0;
  uint64_t reply_bytes_ = 0;
};

}  // namespace

grpc::experimental::Interceptor* RpcLog::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  if (!log::Enabled(log::Level::kDebug)) return nullptr;
  return new Logged(info, peers_);
}

}  // namespace persistd
