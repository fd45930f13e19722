#include "server/service/persistd_service.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/io/errno_status.h"
#include "common/io/mapped_region.h"
#include "common/io/scoped_fd.h"
#include "common/log/log.h"
#include "server/codec/codec.h"
#include "server/io/byte_sink.h"
#include "server/service/call_liveness.h"
#include "server/service/streamed_payload.h"
#include "server/store/dump_writer.h"
#include "server/store/segment_builder.h"
#include "server/store/source_state.h"

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

// How long a call waits for the descriptors its client sent just before it.
constexpr absl::Duration kFdWait = absl::Seconds(5);
// Results of inline sources up to this size come back in the reply.
constexpr uint64_t kInlineReplyBytes = 1 << 20;

// Maps a payload the client sealed: without F_SEAL_SHRINK it could
// truncate the file under our mapping and kill the daemon with SIGBUS.
absl::StatusOr<MappedRegion> MapSealed(int fd, const std::string& name) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_SEAL)) !=
                       (F_SEAL_SHRINK | F_SEAL_SEAL)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the payload descriptor for ", name,
        " must be a memfd sealed with F_SEAL_SHRINK and F_SEAL_SEAL"));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("stat payload of", name, errno);
  return MappedRegion::MapReadOnly(fd, static_cast<size_t>(st.st_size), name);
}

// An unnamed in-memory file holding `bytes`, read from offset 0.
absl::StatusOr<ScopedFd> MemoryFile(const char* label, absl::string_view bytes) {
  ScopedFd fd(::memfd_create(label, MFD_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("memfd_create", label, errno);
  FdSink sink(fd.get(), label);
  absl::Status status = sink.Append(bytes);
  if (status.ok()) status = sink.Finish();
  if (!status.ok()) return status;
  return fd;
}

// Names an O_TMPFILE file (linkat through /proc, which needs no privilege).
absl::Status LinkUnnamed(int fd, const std::string& path) {
  const std::string proc = absl::StrCat("/proc/self/fd/", fd);
  if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(),
               AT_SYMLINK_FOLLOW) != 0) {
    return ErrnoStatus("link", path, errno);
  }
  return absl::OkStatus();
}

// The reply of a load that acquired a segment: its index, generation and
// lease, and whether it was served without a build.
void ReplyWith(const SegmentCache::Acquired& acquired, v1::LoadReply* reply) {
  *reply = acquired.segment->index;
  reply->set_generation(acquired.segment->generation);
  reply->set_lease_id(acquired.lease_id);
  reply->set_cache_hit(acquired.hit);
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

PersistdService::PersistdService(ServiceInfo info, DescriptorInbox* inbox,
                                 SegmentCache* cache)
    : info_(std::move(info)),
      inbox_(inbox),
      warmer_(cache, &builds_),
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
  }
  // The kernel's word on the client; its own claim only where that is
  // unknown (a connection not made through the Listener).
  int pid = ClientPid(context);
  if (pid <= 0) pid = request->pid();
  {
    absl::MutexLock lock(&mu_);
    sessions_[id] = Session{pid, request->client(), std::chrono::steady_clock::now()};
  }
  log::Info("session %s opened by pid %d (%s)", id, pid, request->client());
  return new SessionReactor(this, id);
}

int PersistdService::ClientPid(grpc::ServerContextBase* context) const {
  return info_.peers == nullptr ? -1 : info_.peers->PidOf(context->peer());
}

void PersistdService::EndSession(const std::string& session_id) {
  int pid = -1;
  {
    absl::MutexLock lock(&mu_);
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) {
      pid = it->second.pid;
      sessions_.erase(it);
    }
  }
  cache_->EndSession(session_id);
  log::Info("session %s of pid %d closed; its leases are released", session_id, pid);
}

bool PersistdService::SessionIsOpen(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  return sessions_.count(session_id) > 0;
}

grpc::Status PersistdService::Dump(grpc::ServerContext* context,
                                   const v1::DumpRequest* request,
                                   v1::DumpReply* reply) {
  const absl::Time started = absl::Now();
  const bool inline_payload = !request->payload_inline().empty();
  absl::StatusOr<DescriptorInbox::Delivery> delivery =
      inbox_->Take(request->fds_token(), inline_payload ? 1 : 2, kFdWait);
  if (!delivery.ok()) return ToGrpc(delivery.status());
  std::vector<ScopedFd>* fds = &delivery->fds;
  const std::string name =
      request->display_name().empty() ? "<dump target>" : request->display_name();
  const int target = (*fds)[0].get();
  struct stat st;
  if (::fstat(target, &st) != 0) return ToGrpc(ErrnoStatus("stat", name, errno));
  if (!S_ISREG(st.st_mode) || st.st_size != 0) {
    return Invalid(absl::StrCat(
        "the dump target for ", name,
        " must be an empty regular file the client created (its temp file)"));
  }
  MappedRegion mapped;
  absl::string_view payload = request->payload_inline();
  if (!inline_payload) {
    absl::StatusOr<MappedRegion> region = MapSealed((*fds)[1].get(), name);
    if (!region.ok()) return ToGrpc(region.status());
    mapped = *std::move(region);
    payload = mapped.view();
  }
  const int threads = request->threads() > 0 ? request->threads() : info_.codec_threads;
  if (request->payload_streamed() && (inline_payload || payload.size() < 64)) {
    return Invalid("a streamed payload is a memfd with a 64-byte header");
  }
  const PayloadReady ready =
      WaitForPayload(context, delivery->sender_alive,
                     request->payload_streamed() ? payload.data() : nullptr, "dump");
  absl::StatusOr<v1::DumpReply> result = WriteDump(
      *request, payload, target, name, threads, ready,
      request->payload_streamed() ? ProgressToPayloadHeader((*fds)[1].get()) : nullptr);
  if (!result.ok()) {
    log::Info("dump %s by pid %d failed: %s", name, ClientPid(context),
              result.status().ToString());
    return ToGrpc(result.status());
  }
  *reply = *std::move(result);
  log::Info("dump %s by pid %d: %s level %d, %d stream bytes -> %d file bytes in %.3f s",
            name, ClientPid(context), v1::Codec_Name(request->codec()),
            request->level(), reply->stream_bytes(), reply->file_bytes(),
            absl::ToDoubleSeconds(absl::Now() - started));
  reply->set_fsync(info_.fsync);
  ++dumps_;
  // A compressed file is decompressed now, while its client publishes it,
  // so its first load needs no decompression; within half the budget, so
  // one dump cannot flush the whole cache. (An uncompressed dump's arrays
  // are written by the client after this reply: nothing to decompress.)
  if (request->codec() != v1::CODEC_NONE && !request->no_warm() &&
      reply->stream_bytes() <= cache_->stats().budget / 2 &&
      ::fstat(target, &st) == 0) {
    warmer_.Warm(std::move((*fds)[0]), VersionOf(st, false, name), name,
                 ClientPid(context));
  }
  return grpc::Status::OK;
}

grpc::Status PersistdService::Load(grpc::ServerContext* context,
                                   const v1::LoadRequest* request,
                                   v1::LoadReply* reply) {
  const absl::Time started = absl::Now();
  grpc::Status status = LoadAny(context, request, reply);
  if (log::Enabled(log::Level::kInfo)) {
    std::string name = request->display_name();
    if (name.empty()) {
      name = request->has_remote() ? request->remote().url() : "<source>";
    }
    std::string outcome;
    if (!status.ok()) {
      outcome = absl::StrCat("failed: ", status.error_message());
    } else if (!reply->fetch_ticket().empty()) {
      outcome = "the client fetches it (fetch ticket)";
    } else if (!reply->segment_inline().empty()) {
      outcome = absl::StrFormat("inline result, %d bytes", reply->segment_inline().size());
    } else {
      outcome = absl::StrFormat("%s, segment %s (%d bytes, %d arrays)",
                                reply->cache_hit() ? "cache hit" : "built",
                                reply->segment_path(), reply->segment_size(),
                                reply->arrays_size());
    }
    log::Info("load %s by pid %d: %s in %.3f s", name, ClientPid(context), outcome,
              absl::ToDoubleSeconds(absl::Now() - started));
  }
  return status;
}

grpc::Status PersistdService::LoadAny(grpc::ServerContext* context,
                                      const v1::LoadRequest* request,
                                      v1::LoadReply* reply) {
  const std::string& session = request->session_id();
  if (!session.empty() && !SessionIsOpen(session)) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("session ", session,
                     " is not open (the daemon restarted?): attach again"));
  }
  if (request->source_case() == v1::LoadRequest::kSourceInline) {
    return ToGrpc(LoadInline(*request, reply));
  }
  if (request->source_case() == v1::LoadRequest::kRemote) {
    return ToGrpc(LoadRemote(context, *request, reply));
  }
  if (!request->fetch_ticket().empty()) {
    return ToGrpc(FulfillFetch(context, *request, reply));
  }
  if (request->source_case() != v1::LoadRequest::kFdsToken) {
    return Invalid("LoadRequest needs fds_token or source_inline");
  }
  absl::StatusOr<DescriptorInbox::Delivery> delivery =
      inbox_->Take(request->fds_token(), 1, kFdWait);
  if (!delivery.ok()) return ToGrpc(delivery.status());
  std::vector<ScopedFd>* fds = &delivery->fds;
  const int fd = (*fds)[0].get();
  const std::string display =
      request->display_name().empty() ? "<source>" : request->display_name();
  struct stat st;
  if (::fstat(fd, &st) != 0) return ToGrpc(ErrnoStatus("stat", display, errno));
  if (!S_ISREG(st.st_mode)) {
    return Invalid(absl::StrCat(display, " is not a regular file"));
  }
  // The identity is what the kernel says of the descriptor the client
  // holds, so a cached segment is always of the very file it opened.
  // For listings only (persistctl cache ls/evict --stale): where the
  // descriptor's file lives now, as the kernel names it. Never opened.
  SourceVersion version = VersionOf(st, request->raw(), LinkTarget(fd, display));
  const bool cacheable = !request->transient();
  if (!cacheable) version.ino = next_private_source_++;  // never matches
  SegmentSource source{fd, static_cast<uint64_t>(st.st_size), display,
                       request->raw()};
  auto build = [this, &source, &st, &display](const std::string& path,
                                              const SegmentCache::Wanted& wanted,
                                              uint64_t* segment_size) {
    // The builder asks as it reads and decodes: it stops once nobody
    // wants the segment any more.
    SegmentSource asking = source;
    asking.ready = [&wanted](uint64_t) { return wanted(); };
    // Listed in Status while it runs, for the clients' progress bars.
    std::unique_ptr<BuildProgress::Tracked> tracked =
        builds_.Track(asking, st.st_dev, st.st_ino, display);
    return BuildSegment(tracked->source(), path, segment_size);
  };
  CallLiveness liveness(context, delivery->sender_alive,
                        absl::StrCat("load of ", display));
  auto abandoned = [&liveness] { return !liveness.Check().ok(); };
  absl::StatusOr<SegmentCache::Acquired> acquired =
      cache_->Acquire(version, cacheable, build, session, abandoned);
  if (!acquired.ok()) return ToGrpc(acquired.status());
  ReplyWith(*acquired, reply);
  return grpc::Status::OK;
}

absl::Status PersistdService::LoadRemote(grpc::ServerContext* context,
                                         const v1::LoadRequest& request,
                                         v1::LoadReply* reply) {
  const v1::RemoteObject& object = request.remote();
  if (request.session_id().empty()) {
    return absl::InvalidArgumentError(
        "a remote load needs a session (its client may become the fetcher)");
  }
  if (object.url().find("://") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a remote load needs the object's URL with its protocol, not '",
        object.url(), "'"));
  }
  if (object.etag().empty() && object.mtime_ns() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        object.url(), ": the store reported neither an etag nor a "
        "modification time, so no version of it can be told from another"));
  }
  if (object.size() == 0) return EmptySourceError(object.url());
  SourceVersion version;
  version.url = object.url();
  version.etag = object.etag();
  version.size = object.size();
  version.mtime_ns = object.mtime_ns();
  version.raw = request.raw();
  version.path = object.url();
  CallLiveness liveness(context, nullptr, absl::StrCat("load of ", object.url()));
  absl::StatusOr<SegmentCache::Claimed> claimed = cache_->Claim(
      version, request.session_id(), [&liveness] { return !liveness.Check().ok(); });
  if (!claimed.ok()) return claimed.status();
  if (!claimed->ticket.empty()) {
    reply->set_fetch_ticket(claimed->ticket);
    return absl::OkStatus();
  }
  ReplyWith(claimed->acquired, reply);
  return absl::OkStatus();
}

absl::Status PersistdService::FulfillFetch(grpc::ServerContext* context,
                                           const v1::LoadRequest& request,
                                           v1::LoadReply* reply) {
  absl::StatusOr<DescriptorInbox::Delivery> delivery =
      inbox_->Take(request.fds_token(), 1, kFdWait);
  if (!delivery.ok()) return delivery.status();
  ScopedFd staging = std::move(delivery->fds[0]);
  const std::shared_ptr<const std::atomic<bool>> alive = delivery->sender_alive;
  const bool streamed = request.fetch_streamed();
  // Runs as the claimed build, which knows the object's version; every
  // failure here fails that build and leaves no segment.
  auto build = [&](const SourceVersion& version, const std::string& path,
                   uint64_t* segment_size) -> absl::StatusOr<v1::LoadReply> {
    const std::string what = absl::StrCat("fetch of ", version.url);
    const uint64_t offset = streamed ? kStreamHeaderBytes : 0;
    struct stat st;
    if (::fstat(staging.get(), &st) != 0) {
      return ErrnoStatus("stat the staging file of", version.url, errno);
    }
    if (!S_ISREG(st.st_mode) ||
        static_cast<uint64_t>(st.st_size) != offset + version.size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the staging file of ", version.url, " must be a regular file of ",
          offset + version.size, " bytes (the object's ", version.size,
          streamed ? " after a 64-byte header" : "", "), not ", st.st_size));
    }
    MappedRegion header;
    if (streamed) {
      absl::StatusOr<MappedRegion> mapped = MapSealed(staging.get(), what);
      if (!mapped.ok()) {
        return absl::FailedPreconditionError(mapped.status().message());
      }
      header = *std::move(mapped);
    }
    PayloadReady ready = WaitForPayload(
        context, alive, streamed ? header.view().data() : nullptr, what);
    if (streamed) {
      ready = ReportingReads(std::move(ready), ProgressToPayloadHeader(staging.get()));
    }
    SegmentSource source{staging.get(), version.size, version.url, version.raw};
    source.offset = offset;
    source.ready = ready;
    source.release_behind = streamed;
    absl::StatusOr<v1::LoadReply> built = BuildSegment(source, path, segment_size);
    // The build may not need the object's last bytes (those after an
    // uncompressed pickle's STOP): the segment is kept only once the
    // client has fetched the whole object, as the version it asked for.
    absl::Status complete = built.ok() ? ready(offset + version.size)
                                       : absl::OkStatus();
    if (!complete.ok()) {
      ::unlink(path.c_str());
      return complete;
    }
    return built;
  };
  absl::StatusOr<SegmentCache::Acquired> acquired =
      cache_->Fulfill(request.fetch_ticket(), request.session_id(), build);
  if (!acquired.ok()) return acquired.status();
  ReplyWith(*acquired, reply);
  return absl::OkStatus();
}

absl::Status PersistdService::LoadInline(const v1::LoadRequest& request,
                                         v1::LoadReply* reply) {
  const std::string display =
      request.display_name().empty() ? "<file object>" : request.display_name();
  const std::string& bytes = request.source_inline();
  // The builder reads with pread: give it the bytes as an unnamed file.
  absl::StatusOr<ScopedFd> source_fd = MemoryFile("persistd-inline", bytes);
  if (!source_fd.ok()) return source_fd.status();
  // An uncompressed source's segment is about its size: build it in
  // memory. A compressed one may expand a thousandfold (zeros): build it
  // where segments go, an unnamed file in the store.
  ScopedFd out;
  const std::string segments = info_.store_dir + "/segments";
  // (A quarter of the inline reply: an uncompressed segment adds under 64
  // bytes per array, and every array costs over 100 bytes of pickle, so
  // the result comes back inline and a memfd is never to be linked.)
  if (DetectCodec(bytes) == Codec::kNone && bytes.size() <= kInlineReplyBytes / 4) {
    out.Reset(::memfd_create("persistd-segment", MFD_CLOEXEC));
  } else {
    out.Reset(::open(segments.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0400));
  }
  if (!out.valid()) return ErrnoStatus("create a segment in", segments, errno);
  SegmentSource source{source_fd->get(), bytes.size(), display, request.raw()};
  uint64_t size = 0;
  absl::StatusOr<v1::LoadReply> built =
      BuildSegmentInto(source, out.get(), display, &size);
  if (!built.ok()) return built.status();
  if (size <= kInlineReplyBytes) {
    *reply = *std::move(built);
    reply->clear_segment_path();
    // Unnamed and ours alone: nobody can truncate it under the mapping.
    absl::StatusOr<MappedRegion> segment =
        MappedRegion::MapReadOnly(out.get(), size, display);
    if (!segment.ok()) return segment.status();
    reply->set_segment_inline(std::string(segment->view()));
    return absl::OkStatus();
  }
  // A small source with a large result (an array of zeros compresses
  // well): give the built file a name as a private segment. (Only a
  // compressed source gets here: its file is in the store.)
  auto adopt = [&out, &built](const std::string& path, const SegmentCache::Wanted&,
                              uint64_t* segment_size) {
    absl::Status status = LinkUnnamed(out.get(), path);
    if (!status.ok()) return absl::StatusOr<v1::LoadReply>(status);
    built->set_segment_path(path);
    *segment_size = built->segment_size();
    return absl::StatusOr<v1::LoadReply>(*built);
  };
  SourceVersion version;
  version.ino = next_private_source_++;
  version.raw = request.raw();
  absl::StatusOr<SegmentCache::Acquired> acquired =
      cache_->Acquire(version, /*cacheable=*/false, adopt, request.session_id(),
                      /*abandoned=*/nullptr);
  if (!acquired.ok()) return acquired.status();
  ReplyWith(*acquired, reply);
  return absl::OkStatus();
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
  ListClients(reply);
  reply->set_log_file(info_.log_file);
  reply->set_log_level(info_.log_level);
  for (v1::BuildProgress& build : builds_.List()) {
    *reply->add_builds() = std::move(build);
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
  reply->set_protocol(v1::PROTOCOL_CURRENT);
  reply->set_fds_socket_path(inbox_->socket_path());
  reply->set_fsync(info_.fsync);
  return grpc::Status::OK;
}


// -- administration (persistctl cache ls / evict) -----------------------------

grpc::Status PersistdService::ListSegments(grpc::ServerContext*,
                                           const v1::ListSegmentsRequest*,
                                           v1::ListSegmentsReply* reply) {
  const auto now = std::chrono::system_clock::now();
  for (const SegmentCache::Listing& listing : cache_->List()) {
    const Segment& segment = *listing.segment;
    v1::SegmentInfo* info = reply->add_segments();
    info->set_source_path(segment.version.path);
    info->set_segment_path(segment.path);
    info->set_generation(segment.generation);
    info->set_segment_bytes(segment.size);
    info->set_source_bytes(segment.version.size);
    info->set_codec(segment.index.codec());
    info->set_format(segment.index.format());
    info->set_arrays(segment.index.arrays_size());
    info->set_leases(listing.lease_sessions.size());
    info->set_current(listing.current);
    info->set_raw(segment.version.raw);
    for (const std::string& session : listing.lease_sessions) {
      info->add_lease_sessions(session);
    }
    info->set_source_state(listing.current ? SourceStateOf(segment.version)
                                           : v1::SegmentInfo::SOURCE_UNKNOWN);
    struct stat st;
    if (::stat(segment.path.c_str(), &st) == 0) {
      const auto built = std::chrono::system_clock::time_point(
          std::chrono::seconds(st.st_mtim.tv_sec));
      if (now > built) {
        info->set_age_seconds(
            std::chrono::duration_cast<std::chrono::seconds>(now - built).count());
      }
    }
  }
  return grpc::Status::OK;
}

void PersistdService::ListClients(v1::StatusReply* reply) {
  struct Held {
    uint32_t leases = 0;
    std::set<uint64_t> generations;
    uint64_t bytes = 0;
  };
  std::map<std::string, Held> held;
  for (const SegmentCache::Listing& listing : cache_->List()) {
    for (const std::string& session : listing.lease_sessions) {
      Held& h = held[session];
      ++h.leases;
      if (h.generations.insert(listing.segment->generation).second) {
        h.bytes += listing.segment->size;
      }
    }
  }
  const auto now = std::chrono::steady_clock::now();
  absl::MutexLock lock(&mu_);
  reply->set_sessions(sessions_.size());
  for (const auto& [id, session] : sessions_) {
    v1::ClientSession* client = reply->add_clients();
    client->set_session_id(id);
    client->set_pid(session.pid);
    client->set_client(session.client);
    client->set_age_seconds(
        std::chrono::duration_cast<std::chrono::seconds>(now - session.opened).count());
    auto it = held.find(id);
    if (it == held.end()) continue;
    client->set_leases(it->second.leases);
    client->set_segments(it->second.generations.size());
    client->set_segment_bytes(it->second.bytes);
  }
}

grpc::Status PersistdService::Evict(grpc::ServerContext* context,
                                    const v1::EvictRequest* request,
                                    v1::EvictReply* reply) {
  if (!request->all() && !request->stale() && request->files().empty() &&
      request->source_paths().empty()) {
    return Invalid("Evict needs all, stale, files or source_paths");
  }
  const std::set<uint64_t> stale =
      request->stale() ? StaleGenerations(*cache_) : std::set<uint64_t>();
  std::set<std::pair<uint64_t, uint64_t>> files;
  for (const v1::FileIdentity& file : request->files()) {
    files.emplace(file.dev(), file.ino());
  }
  const std::set<std::string> paths(request->source_paths().begin(),
                                    request->source_paths().end());
  SegmentCache::Evicted evicted = cache_->Evict([&](const Segment& segment) {
    const SourceVersion& v = segment.version;
    return request->all() || stale.count(segment.generation) > 0 ||
           files.count({v.dev, v.ino}) > 0 || paths.count(v.path) > 0;
  });
  for (const auto& segment : evicted.segments) {
    reply->add_source_paths(segment->version.path);
  }
  reply->set_evicted(evicted.segments.size());
  reply->set_pending(evicted.pending);
  reply->set_freed_bytes(evicted.freed_bytes);
  std::string sources;
  for (const auto& segment : evicted.segments) {
    absl::StrAppend(&sources, sources.empty() ? "" : ", ",
                    segment->version.path.empty() ? "<unnamed>" : segment->version.path);
  }
  log::Info("evicted %d segments at the request of pid %d (%d bytes freed, %d kept "
            "until their leases end)%s%s",
            evicted.segments.size(), ClientPid(context), evicted.freed_bytes,
            evicted.pending, sources.empty() ? "" : ": ", sources);
  return grpc::Status::OK;
}

}  // namespace persistd
