#include "server/service/persistd_service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/io/errno_status.h"
#include "server/io/scoped_fd.h"
#include "server/store/dump_writer.h"
#include "server/store/segment_builder.h"

namespace persistd {

namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// Keeps one client's session open for as long as its Attach stream lives.
class SessionReactor : public grpc::ServerWriteReactor<v1::AttachEvent> {
 public:
  SessionReactor(PersistdService* service, std::string session_id)
      : service_(service), session_id_(std::move(session_id)) {
    event_.set_session_id(session_id_);
    StartWrite(&event_);
  }

  void OnWriteDone(bool ok) override {
    // After the first event the stream just stays open; a failed write
    // means the client is gone.
    if (!ok) End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "client gone"));
  }
  void OnCancel() override { End(grpc::Status::CANCELLED); }
  void OnDone() override { delete this; }

 private:
  void End(const grpc::Status& status) {
    if (ended_.exchange(true)) return;
    service_->EndSession(session_id_);
    Finish(status);
  }

  PersistdService* const service_;
  const std::string session_id_;
  v1::AttachEvent event_;
  std::atomic<bool> ended_{false};
};

}  // namespace

PersistdService::PersistdService(ServiceInfo info, StagingArea* staging,
                                 SegmentCache* cache)
    : info_(std::move(info)),
      staging_(staging),
      cache_(cache),
      started_(std::chrono::steady_clock::now()) {}

grpc::ServerWriteReactor<v1::AttachEvent>* PersistdService::Attach(
    grpc::CallbackServerContext* context, const v1::AttachRequest* request) {
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    static thread_local std::mt19937_64 rng(std::random_device{}());
    id = absl::StrFormat("S%d-%08x", next_session_++,
                         static_cast<uint32_t>(rng()));
    sessions_.insert(id);
  }
  fprintf(stderr, "persistd: session %s opened by pid %d (%s)\n", id.c_str(),
          request->pid(), request->client().c_str());
  return new SessionReactor(this, id);
}

void PersistdService::EndSession(const std::string& session_id) {
  {
    absl::MutexLock lock(&mu_);
    sessions_.erase(session_id);
  }
  cache_->EndSession(session_id);
  fprintf(stderr, "persistd: session %s closed; its leases are released\n",
          session_id.c_str());
}

bool PersistdService::SessionIsOpen(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  return sessions_.count(session_id) > 0;
}

grpc::Status PersistdService::CreateStaging(
    grpc::ServerContext*, const v1::CreateStagingRequest* request,
    v1::CreateStagingReply* reply) {
  absl::StatusOr<StagingArea::Staging> staging = staging_->Create(request->size());
  if (!staging.ok()) return ToGrpc(staging.status());
  reply->set_staging_id(staging->id);
  reply->set_path(staging->path);
  return grpc::Status::OK;
}

grpc::Status PersistdService::DropStaging(grpc::ServerContext*,
                                          const v1::DropStagingRequest* request,
                                          v1::DropStagingReply*) {
  staging_->Drop(request->staging_id());
  return grpc::Status::OK;
}

grpc::Status PersistdService::CommitDump(grpc::ServerContext*,
                                         const v1::CommitDumpRequest* request,
                                         v1::CommitDumpReply* reply) {
  std::string target = request->target_path();
  if (target.empty()) {
    absl::StatusOr<std::string> out = staging_->OutputPath(request->staging_id());
    if (!out.ok()) return ToGrpc(out.status());
    target = *out;
  } else if (target[0] != '/') {
    return Invalid(absl::StrCat("target_path must be absolute, got '", target,
                                "' (the client resolves relative names)"));
  }
  uint64_t size = 0;
  absl::StatusOr<MappedRegion> staging = staging_->Map(request->staging_id(), &size);
  if (!staging.ok()) return ToGrpc(staging.status());
  int threads = request->threads() > 0 ? request->threads() : info_.codec_threads;
  absl::StatusOr<v1::CommitDumpReply> result =
      WriteDump(*request, staging->view(), target, threads);
  if (!result.ok()) return ToGrpc(result.status());
  *reply = *std::move(result);
  ++dumps_;
  return grpc::Status::OK;
}

grpc::Status PersistdService::Load(grpc::ServerContext*,
                                   const v1::LoadRequest* request,
                                   v1::LoadReply* reply) {
  const std::string& session = request->session_id();
  if (!session.empty() && !SessionIsOpen(session)) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("session ", session,
                     " is not open (the daemon restarted?): attach again"));
  }
  ScopedFd fd;
  SourceVersion version;
  version.raw = request->raw();
  std::string display;
  bool cacheable = true;
  uint64_t size = 0;
  if (request->source_case() == v1::LoadRequest::kPath) {
    display = request->path();
    if (display.empty() || display[0] != '/') {
      return Invalid(absl::StrCat("path must be absolute, got '", display, "'"));
    }
    fd.Reset(::open(display.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ToGrpc(ErrnoStatus("open", display, errno));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ToGrpc(ErrnoStatus("stat", display, errno));
    if (!S_ISREG(st.st_mode)) {
      return Invalid(absl::StrCat(display, " is not a regular file"));
    }
    version.path = display;
    version.dev = st.st_dev;
    version.ino = st.st_ino;
    version.size = st.st_size;
    version.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    version.ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
    size = st.st_size;
  } else if (request->source_case() == v1::LoadRequest::kStagingId) {
    display = "<file object>";
    uint64_t staged = 0;
    absl::StatusOr<ScopedFd> opened = staging_->Open(request->staging_id(), &staged);
    if (!opened.ok()) return ToGrpc(opened.status());
    fd = *std::move(opened);
    if (request->staging_length() > staged) {
      return Invalid(absl::StrCat("staging_length ", request->staging_length(),
                                  " exceeds the staging file's ", staged, " bytes"));
    }
    size = request->staging_length();
    cacheable = false;
    version.ino = next_private_source_++;  // never matches another load
  } else {
    return Invalid("LoadRequest needs a path or a staging_id");
  }

  SegmentSource source{fd.get(), size, display, request->raw()};
  auto build = [&source](const std::string& path, uint64_t* segment_size) {
    return BuildSegment(source, path, segment_size);
  };
  absl::StatusOr<SegmentCache::Acquired> acquired =
      cache_->Acquire(version, cacheable, build, session);
  if (!acquired.ok()) return ToGrpc(acquired.status());
  *reply = acquired->segment->index;
  reply->set_generation(acquired->segment->generation);
  reply->set_lease_id(acquired->lease_id);
  reply->set_cache_hit(acquired->hit);
  return grpc::Status::OK;
}

grpc::Status PersistdService::Release(grpc::ServerContext*,
                                      const v1::ReleaseRequest* request,
                                      v1::ReleaseReply*) {
  cache_->Release(request->session_id(), request->lease_id());
  return grpc::Status::OK;
}

grpc::Status PersistdService::Status(grpc::ServerContext*,
                                     const v1::StatusRequest*,
                                     v1::StatusReply* reply) {
  reply->set_version(info_.version);
  reply->set_store_dir(info_.store_dir);
  reply->set_socket_path(info_.socket_path);
  reply->set_pid(::getpid());
  reply->set_uptime_seconds(std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::steady_clock::now() - started_)
                                .count());
  {
    absl::MutexLock lock(&mu_);
    reply->set_sessions(sessions_.size());
  }
  SegmentCache::Stats stats = cache_->stats();
  reply->set_segments(stats.segments);
  reply->set_leased_segments(stats.leased_segments);
  reply->set_cache_bytes(stats.bytes);
  reply->set_cache_budget_bytes(stats.budget);
  reply->set_loads(stats.loads);
  reply->set_cache_hits(stats.hits);
  reply->set_dumps(dumps_);
  reply->set_evictions(stats.evictions);
  return grpc::Status::OK;
}

}  // namespace persistd
