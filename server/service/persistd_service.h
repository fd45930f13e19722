// PersistdService implements the gRPC control plane (proto/persistd.proto)
// on top of the store: it validates requests, takes the descriptors the
// client passed from the inbox, calls the dump writer, the segment builder
// and the segment cache, and maps their absl::Status results to gRPC
// statuses. It opens no path a client names and holds no bytes of its own.
//
// Thread-safe: gRPC calls every method concurrently.
#ifndef PERSISTD_SERVER_SERVICE_PERSISTD_SERVICE_H_
#define PERSISTD_SERVER_SERVICE_PERSISTD_SERVICE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "proto/persistd.grpc.pb.h"
#include "server/store/segment_cache.h"
#include "server/store/segment_builder.h"
#include "server/service/build_progress.h"
#include "server/service/cache_warmer.h"
#include "server/service/descriptor_inbox.h"
#include "server/service/peer_table.h"

namespace persistd {

struct ServiceInfo {
  std::string version;
  std::string store_dir;
  std::string socket_path;
  int codec_threads = 1;
  bool fsync = false;  // --fsync: clients fsync dumps before publishing
  // Who is at the other end of each connection (SO_PEERCRED): names the
  // client of each call in the log and each session in Status. Null: the
  // pids sessions claim.
  const PeerTable* peers = nullptr;
  std::string log_file;   // for Status
  std::string log_level;  // for Status
};

class PersistdService final
    : public v1::Persistd::WithCallbackMethod_Attach<v1::Persistd::Service> {
 public:
  PersistdService(ServiceInfo info, DescriptorInbox* inbox, SegmentCache* cache);

  grpc::ServerWriteReactor<v1::AttachEvent>* Attach(
      grpc::CallbackServerContext* context,
      const v1::AttachRequest* request) override;
  grpc::Status Dump(grpc::ServerContext* context,
                    const v1::DumpRequest* request,
                    v1::DumpReply* reply) override;
  grpc::Status Load(grpc::ServerContext* context,
                    const v1::LoadRequest* request,
                    v1::LoadReply* reply) override;
  grpc::Status Release(grpc::ServerContext* context,
                       const v1::ReleaseRequest* request,
                       v1::ReleaseReply* reply) override;
  grpc::Status Status(grpc::ServerContext* context,
                      const v1::StatusRequest* request,
                      v1::StatusReply* reply) override;

  // Called by a session's reactor when its stream ends.
  void EndSession(const std::string& session_id);

 private:
  bool SessionIsOpen(const std::string& session_id);
  // The pid of the call's client, -1 when unknown.
  int ClientPid(grpc::ServerContextBase* context) const;
  // Load() without its log line.
  grpc::Status LoadAny(grpc::ServerContext* context,
                       const v1::LoadRequest* request, v1::LoadReply* reply);
  void ListClients(v1::StatusReply* reply);
  // Load of a small source sent inline: the result comes back inline when
  // it is small too, else as a private segment.
  absl::Status LoadInline(const v1::LoadRequest& request, v1::LoadReply* reply);
  // Load of an object-store object (LoadRequest.remote): its segment, or a
  // fetch ticket that makes the client its fetcher on this node.
  absl::Status LoadRemote(grpc::ServerContext* context,
                          const v1::LoadRequest& request, v1::LoadReply* reply);
  // Redeems a fetch ticket: builds the object's segment from the staging
  // descriptor while the client fills it.
  absl::Status FulfillFetch(grpc::ServerContext* context,
                            const v1::LoadRequest& request, v1::LoadReply* reply);

  const ServiceInfo info_;
  DescriptorInbox* const inbox_;
  BuildProgress builds_;  // before warmer_, whose builds it lists
  CacheWarmer warmer_;
  SegmentCache* const cache_;
  const std::chrono::steady_clock::time_point started_;

  absl::Mutex mu_;
  uint64_t next_session_ ABSL_GUARDED_BY(mu_) = 1;
  struct Session {
    int pid = -1;
    std::string client;  // AttachRequest.client
    std::chrono::steady_clock::time_point opened;
  };
  std::map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> dumps_{0};
  std::atomic<uint64_t> next_private_source_{1};

  // -- administration (persistctl cache ls / evict) --------------------------
 public:
  grpc::Status ListSegments(grpc::ServerContext* context,
                            const v1::ListSegmentsRequest* request,
                            v1::ListSegmentsReply* reply) override;
  grpc::Status Evict(grpc::ServerContext* context,
                     const v1::EvictRequest* request,
                     v1::EvictReply* reply) override;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_PERSISTD_SERVICE_H_
