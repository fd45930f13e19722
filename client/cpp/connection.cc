#include "client/cpp/connection.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cpp/descriptor_channel.h"
#include "client/cpp/dump_target.h"
#include "common/default_paths.h"
#include "common/io/errno_status.h"
#include "common/io/scoped_fd.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace persistd {
namespace internal {

namespace {

// Sent in AttachRequest.client, for the daemon's logs and status.
constexpr char kClientName[] = "cpp/0.2.0";

// Payloads up to this size travel in the request itself: one message
// beats creating, filling and sealing a memfd.
constexpr uint64_t kInlinePayloadBytes = 1 << 20;

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

// "a FIFO", ...: for messages about files we will not load.
const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

// pwrite(2) until all of `bytes` is at `offset` (a single call may write
// less, and never more than about 2 GiB).
absl::Status WriteAt(int fd, absl::string_view bytes, uint64_t offset,
                     absl::string_view name) {
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", name, errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// `pieces`, back to back, in a memfd sealed against any change: the daemon
// maps it, and a file shrunk under a mapping would kill it with SIGBUS.
absl::StatusOr<ScopedFd> SealedPayload(const std::vector<absl::string_view>& pieces) {
  const char* name = "persistd dump payload";
  ScopedFd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return ErrnoStatus("memfd_create", name, errno);
  uint64_t offset = 0;
  for (absl::string_view piece : pieces) {
    absl::Status status = WriteAt(fd.get(), piece, offset, name);
    if (!status.ok()) return status;
    offset += piece.size();
  }
  if (::fcntl(fd.get(), F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    return ErrnoStatus("seal", name, errno);
  }
  return fd;
}

bool InSegment(const v1::Extent& e, absl::string_view segment) {
  return e.offset() <= segment.size() && e.length() <= segment.size() - e.offset();
}

// A reply whose extents leave the segment would make views read past the
// mapping: refused whole, as a daemon bug or an impostor.
absl::Status CheckExtents(const v1::LoadReply& reply, absl::string_view segment,
                          const std::string& path) {
  auto outside = [&path](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(
        "persistd's reply for ", path, " places ", what,
        " outside its segment: the daemon is broken or not persistd; restart it"));
  };
  if (!InSegment(reply.skeleton(), segment)) return outside("the pickle");
  for (int i = 0; i < reply.arrays_size(); ++i) {
    if (!InSegment(reply.arrays(i).data(), segment)) {
      return outside(absl::StrCat("array ", i));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Lease::~Lease() {
  if (connection_ != nullptr && !id_.empty()) connection_->Release(id_);
}

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(
    const std::string& socket_path) {
  std::shared_ptr<Connection> c(new Connection());
  c->socket_path_ = socket_path.empty() ? DefaultSocketPath() : socket_path;
  c->channel_ = grpc::CreateChannel(absl::StrCat("unix:", c->socket_path_),
                                    grpc::InsecureChannelCredentials());
  c->stub_ = v1::Persistd::NewStub(c->channel_);
  absl::StatusOr<v1::StatusReply> daemon = c->Status();
  if (!daemon.ok()) {
    if (!absl::IsUnavailable(daemon.status())) return daemon.status();
    return absl::UnavailableError(absl::StrCat(
        "persistd is not running at ", c->socket_path_, " (",
        daemon.status().message(), "): start it with `persistd --socket ",
        c->socket_path_, "`, or pass the socket it listens on"));
  }
  // Checked before anything else is sent: a daemon of another protocol
  // would misread every request.
  if (daemon->protocol() != v1::PROTOCOL_CURRENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "persistd at ", c->socket_path_, " (version '", daemon->version(),
        "') speaks protocol ", daemon->protocol(), ", this client speaks protocol ",
        v1::PROTOCOL_CURRENT, ": upgrade the client or the daemon so that they match"));
  }
  const std::string fds_path = daemon->fds_socket_path().empty()
                                   ? c->socket_path_ + ".fds"
                                   : daemon->fds_socket_path();
  absl::StatusOr<DescriptorChannel> descriptors = DescriptorChannel::Connect(fds_path);
  if (!descriptors.ok()) return descriptors.status();
  {
    absl::MutexLock lock(&c->descriptors_mutex_);
    c->descriptors_ = std::make_unique<DescriptorChannel>(*std::move(descriptors));
  }
  absl::Status attached = c->Attach();
  if (!attached.ok()) return attached;
  return c;
}

Connection::~Connection() {
  if (attach_ != nullptr) {
    attach_context_.TryCancel();
    attach_->Finish();
  }
}

absl::Status Connection::Attach() {
  v1::AttachRequest request;
  request.set_pid(::getpid());
  request.set_client(kClientName);
  attach_ = stub_->Attach(&attach_context_, request);
  v1::AttachEvent event;
  if (!attach_->Read(&event)) {
    grpc::Status status = attach_->Finish();
    attach_.reset();
    return absl::UnavailableError(absl::StrCat(
        "persistd at ", socket_path_, " opened no session (",
        status.error_message(), "); is it shutting down?"));
  }
  session_id_ = event.session_id();
  return absl::OkStatus();
}

absl::StatusOr<v1::StatusReply> Connection::Status() {
  v1::StatusReply reply;
  grpc::ClientContext context;
  absl::Status status = FromGrpc(stub_->Status(&context, v1::StatusRequest(), &reply));
  if (!status.ok()) return status;
  return reply;
}

absl::StatusOr<std::string> Connection::SendFds(const std::vector<int>& fds) {
  absl::MutexLock lock(&descriptors_mutex_);
  return descriptors_->Send(fds);
}

void Connection::Release(const std::string& lease_id) {
  grpc::ClientContext context;
  v1::ReleaseRequest request;
  request.set_session_id(session_id_);
  request.set_lease_id(lease_id);
  v1::ReleaseReply reply;
  // Ignored on failure: the lease ends with the session at the latest.
  stub_->Release(&context, request, &reply);
}

absl::StatusOr<Connection::Loaded> Connection::Load(const std::string& path) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, maybe
  // forever, before the check below could refuse it. It changes nothing
  // for a regular file.
  ScopedFd source(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!source.valid()) return ErrnoStatus("open", path, errno);
  struct stat st;
  if (::fstat(source.get(), &st) != 0) return ErrnoStatus("stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load ", path, ": it is ", FileKind(st.st_mode),
        ", not a regular file"));
  }
  absl::StatusOr<std::string> token = SendFds({source.get()});
  if (!token.ok()) return token.status();
  source.Reset();  // the daemon has its own descriptor of the file now

  v1::LoadRequest request;
  request.set_session_id(session_id_);
  request.set_fds_token(*token);
  request.set_display_name(path);
  Loaded out;
  grpc::ClientContext context;
  absl::Status status = FromGrpc(stub_->Load(&context, request, &out.reply));
  if (!status.ok()) return status;

  out.lease.reset(new Lease());
  out.lease->connection_ = shared_from_this();
  out.lease->id_ = out.reply.lease_id();  // released by ~Lease from here on
  const v1::LoadReply& reply = out.reply;
  if (!reply.segment_path().empty()) {
    const std::string& segment_path = reply.segment_path();
    ScopedFd fd(::open(segment_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open segment", segment_path, errno);
    // A mapping past the end of the file would SIGBUS on first touch.
    struct stat segment_st;
    if (::fstat(fd.get(), &segment_st) != 0) {
      return ErrnoStatus("stat segment", segment_path, errno);
    }
    if (static_cast<uint64_t>(segment_st.st_size) < reply.segment_size()) {
      return absl::DataLossError(absl::StrCat(
          "segment ", segment_path, " is shorter than the daemon says; "
          "evict it (persistctl cache evict) and load again"));
    }
    absl::StatusOr<MappedRegion> region =
        MappedRegion::MapReadOnly(fd.get(), reply.segment_size(), segment_path);
    if (!region.ok()) return region.status();
    out.lease->mapping_ = *std::move(region);
  } else {
    // Only results of inline sources come back inline, and this client
    // always passes descriptors; accepted all the same. Arrays are then
    // aligned as the allocator aligns the string (16 bytes), not to 64.
    out.lease->inline_ = std::move(*out.reply.mutable_segment_inline());
  }
  status = CheckExtents(reply, out.lease->segment(), path);
  if (!status.ok()) return status;
  return out;
}

absl::Status Connection::DumpPickle(const std::string& path,
                                    absl::string_view skeleton,
                                    const std::vector<RawArray>& arrays,
                                    v1::Codec codec, int level) {
  // Uncompressed, the daemon leaves a hole for each array (EXTERNAL) and
  // we write the bytes there from the caller's buffer: their only copy.
  // A codec needs the bytes themselves, so they go in the payload.
  const bool external = codec == v1::CODEC_NONE;
  v1::DumpRequest request;
  std::vector<absl::string_view> pieces;  // the payload, back to back
  uint64_t size = 0;
  auto place = [&pieces, &size](absl::string_view bytes, v1::Extent* extent) {
    extent->set_offset(size);
    extent->set_length(bytes.size());
    size += bytes.size();
    pieces.push_back(bytes);
  };
  place(skeleton, request.mutable_skeleton());
  for (const RawArray& a : arrays) {
    v1::DumpArray* d = request.add_arrays();
    place(a.state_pickle, d->mutable_state());
    if (external) {
      d->set_kind(v1::DumpArray::EXTERNAL);
      d->mutable_data()->set_length(a.bytes.size());
    } else {
      d->set_kind(v1::DumpArray::RAW);
      place(a.bytes, d->mutable_data());
    }
  }
  request.set_codec(codec);
  request.set_level(level);
  request.set_display_name(path);

  // Nothing reaches `path` unless Publish() below succeeds; on every
  // earlier return the temp file goes with `target`.
  absl::StatusOr<DumpTarget> target = DumpTarget::Create(path);
  if (!target.ok()) return target.status();
  std::vector<int> fds = {target->fd()};
  ScopedFd payload;
  // An empty inline payload means "see the memfd", so an (invalid) empty
  // one goes as a memfd too, for the daemon to refuse.
  if (size > 0 && size <= kInlinePayloadBytes) {
    std::string* out = request.mutable_payload_inline();
    out->reserve(size);
    for (absl::string_view piece : pieces) out->append(piece.data(), piece.size());
  } else {
    absl::StatusOr<ScopedFd> sealed = SealedPayload(pieces);
    if (!sealed.ok()) return sealed.status();
    payload = *std::move(sealed);
    fds.push_back(payload.get());
  }
  absl::StatusOr<std::string> token = SendFds(fds);
  if (!token.ok()) return token.status();
  payload.Reset();  // the daemon has its own descriptor of it now
  request.set_fds_token(*token);

  v1::DumpReply reply;
  grpc::ClientContext context;
  absl::Status status = FromGrpc(stub_->Dump(&context, request, &reply));
  if (!status.ok()) return status;
  const int holes = external ? static_cast<int>(arrays.size()) : 0;
  if (reply.external_offsets_size() != holes) {
    return absl::DataLossError(absl::StrCat(
        "persistd left ", reply.external_offsets_size(), " holes in ", path,
        " for ", holes, " arrays: the daemon is broken; nothing was written"));
  }
  for (int i = 0; i < holes; ++i) {
    const uint64_t offset = reply.external_offsets(i);
    absl::string_view bytes = arrays[i].bytes;
    if (offset > reply.file_bytes() || bytes.size() > reply.file_bytes() - offset) {
      return absl::DataLossError(absl::StrCat(
          "persistd placed array ", i, " of ", path,
          " past the end of the file: the daemon is broken; nothing was written"));
    }
    status = WriteAt(target->fd(), bytes, offset, path);
    if (!status.ok()) return status;
  }
  return target->Publish(reply.fsync());
}

}  // namespace internal
}  // namespace persistd
