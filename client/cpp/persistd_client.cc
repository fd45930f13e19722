#include "client/cpp/persistd_client.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <utility>

#include "absl/strings/numbers.h"
#include "client/cpp/descriptor_channel.h"
#include "client/cpp/dump_target.h"
#include "client/cpp/pickle_emitter.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "proto/persistd.grpc.pb.h"
#include "common/default_paths.h"
#include "common/pickle/pickle_scanner.h"
#include "common/io/errno_status.h"
#include "common/io/scoped_fd.h"

namespace persistd {

namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

// Payloads up to this size travel in the request itself: one message
// beats creating, filling and sealing a memfd.
constexpr uint64_t kInlinePayloadBytes = 1 << 20;

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

// Best-effort names: the string pushed last before each array's
// `__persistd__ materialize` global -- the dict key or attribute name.
std::vector<std::string> ArrayNames(absl::string_view pickle) {
  std::vector<std::string> names;
  std::map<int64_t, std::string> memo;
  std::string last;
  bool last_was_string = false;
  int64_t memo_size = 0;
  PickleScanner scanner(pickle);
  PickleOp op;
  while (!scanner.AtEnd() && scanner.Next(&op).ok()) {
    switch (op.code) {
      case 0x8c: case 'X': case 'V': case 'U': case 'T': case 0x8d:
        last = std::string(op.arg);
        last_was_string = true;
        continue;
      case 0x94:  // MEMOIZE
        if (last_was_string) memo[memo_size] = last;
        ++memo_size;
        continue;
      case 'q': case 'r': case 'p':  // BINPUT, LONG_BINPUT, PUT
        if (last_was_string) memo[op.int_value] = last;
        continue;
      case 'h': case 'j': case 'g': {  // BINGET, LONG_BINGET, GET
        auto it = memo.find(op.int_value);
        if (it != memo.end()) {
          last = it->second;
          last_was_string = true;
          continue;
        }
        break;
      }
      case 'c':  // GLOBAL
        if (op.arg == "__persistd__" && op.arg2 == "materialize") {
          names.push_back(last);
        }
        break;
      default:
        break;
    }
    last_was_string = false;
  }
  return names;
}

}  // namespace

// One gRPC channel and its Attach stream; leases live as long as it does.
class Session {
 public:
  // A channel to `socket`; nothing is sent until a call.
  static std::shared_ptr<Session> Dial(const std::string& socket) {
    auto session = std::shared_ptr<Session>(new Session());
    session->channel_ = grpc::CreateChannel(absl::StrCat("unix:", socket),
                                            grpc::InsecureChannelCredentials());
    session->stub_ = v1::Persistd::NewStub(session->channel_);
    return session;
  }

  ~Session() {
    if (attach_) {
      attach_context_.TryCancel();
      attach_->Finish();
    }
  }

  absl::StatusOr<v1::StatusReply> GetStatus() {
    v1::StatusReply reply;
    grpc::ClientContext context;
    absl::Status status =
        FromGrpc(stub_->Status(&context, v1::StatusRequest(), &reply));
    if (!status.ok()) return status;
    return reply;
  }

  // Opens the session: the daemon's first event names it.
  absl::Status Attach() {
    v1::AttachRequest request;
    request.set_pid(::getpid());
    request.set_client("cpp/0.2.0");
    attach_ = stub_->Attach(&attach_context_, request);
    v1::AttachEvent event;
    if (!attach_->Read(&event)) {
      grpc::Status status = attach_->Finish();
      attach_.reset();
      return absl::UnavailableError(absl::StrCat(
          "persistd opened no session (", status.error_message(), ")"));
    }
    id_ = event.session_id();
    return absl::OkStatus();
  }

  v1::Persistd::Stub* stub() { return stub_.get(); }
  const std::string& id() const { return id_; }

 private:
  Session() = default;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Persistd::Stub> stub_;
  grpc::ClientContext attach_context_;
  std::unique_ptr<grpc::ClientReader<v1::AttachEvent>> attach_;
  std::string id_;
};

LoadedFile::~LoadedFile() {
  if (session_ && !lease_id_.empty()) {
    grpc::ClientContext context;
    v1::ReleaseRequest request;
    request.set_session_id(session_->id());
    request.set_lease_id(lease_id_);
    v1::ReleaseReply reply;
    session_->stub()->Release(&context, request, &reply);
  }
}

absl::StatusOr<const ArrayInfo*> LoadedFile::Find(absl::string_view name) const {
  for (const ArrayInfo& info : arrays_) {
    if (info.name == name) return &info;
  }
  return absl::NotFoundError(absl::StrCat("no array named '", name, "' in the file"));
}

Client::Client(std::shared_ptr<Session> session,
               std::unique_ptr<DescriptorChannel> descriptors)
    : session_(std::move(session)), descriptors_(std::move(descriptors)) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const std::string& socket_path) {
  const std::string socket =
      socket_path.empty() ? DefaultSocketPath() : socket_path;
  std::shared_ptr<Session> session = Session::Dial(socket);
  absl::StatusOr<v1::StatusReply> daemon = session->GetStatus();
  if (!daemon.ok()) {
    if (!absl::IsUnavailable(daemon.status())) return daemon.status();
    return absl::UnavailableError(absl::StrCat(
        "persistd is not running at ", socket, " (", daemon.status().message(),
        "): start it with `persistd --socket ", socket, "`"));
  }
  // Checked before anything else is sent: a daemon of another protocol
  // would misread every request.
  if (daemon->protocol() != v1::PROTOCOL_CURRENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "persistd at ", socket, " (version '", daemon->version(),
        "') speaks protocol ", daemon->protocol(), ", this client speaks protocol ",
        v1::PROTOCOL_CURRENT, ": upgrade the client or the daemon so that they match"));
  }
  const std::string fds_path = daemon->fds_socket_path().empty()
                                   ? socket + ".fds"
                                   : daemon->fds_socket_path();
  absl::StatusOr<DescriptorChannel> descriptors = DescriptorChannel::Connect(fds_path);
  if (!descriptors.ok()) return descriptors.status();
  absl::Status attached = session->Attach();
  if (!attached.ok()) return attached;
  return std::unique_ptr<Client>(
      new Client(std::move(session),
                 std::make_unique<DescriptorChannel>(*std::move(descriptors))));
}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<LoadedFile>> Client::Load(const std::string& path) {
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
  absl::StatusOr<std::string> token = descriptors_->Send({source.get()});
  if (!token.ok()) return token.status();
  source.Reset();  // the daemon has its own descriptor of the file now

  v1::LoadRequest request;
  request.set_session_id(session_->id());
  request.set_fds_token(*token);
  request.set_display_name(path);
  v1::LoadReply reply;
  grpc::ClientContext context;
  absl::Status status = FromGrpc(session_->stub()->Load(&context, request, &reply));
  if (!status.ok()) return status;

  std::unique_ptr<LoadedFile> file(new LoadedFile());
  file->session_ = session_;
  file->lease_id_ = reply.lease_id();  // released by ~LoadedFile from here on
  file->generation_ = reply.generation();
  file->cache_hit_ = reply.cache_hit();
  absl::string_view segment;
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
          "segment ", segment_path, " is shorter than the daemon says"));
    }
    absl::StatusOr<MappedRegion> region =
        MappedRegion::MapReadOnly(fd.get(), reply.segment_size(), segment_path);
    if (!region.ok()) return region.status();
    file->segment_ = *std::move(region);
    segment = file->segment_.view();
  } else {
    // Only results of inline sources come back inline, and this client
    // always passes descriptors; accepted all the same. Arrays are then
    // aligned as the allocator aligns the string (16 bytes), not to 64.
    file->inline_segment_ = std::move(*reply.mutable_segment_inline());
    segment = file->inline_segment_;
  }
  auto in_segment = [&](const v1::Extent& e) {
    return e.offset() <= segment.size() && e.length() <= segment.size() - e.offset();
  };
  if (!in_segment(reply.skeleton())) {
    return absl::DataLossError("daemon reply points outside its segment");
  }
  file->pickle_ = segment.substr(reply.skeleton().offset(), reply.skeleton().length());
  std::vector<std::string> names = ArrayNames(file->pickle_);
  for (int i = 0; i < reply.arrays_size(); ++i) {
    const v1::LoadArray& a = reply.arrays(i);
    if (!in_segment(a.data())) {
      return absl::DataLossError("daemon reply points outside its segment");
    }
    ArrayInfo info;
    info.dtype = a.kind() == v1::LoadArray::RAW ? a.dtype() : "|O";
    info.itemsize = a.itemsize();
    info.shape.assign(a.shape().begin(), a.shape().end());
    info.fortran_order = a.fortran_order();
    info.data = segment.data() + a.data().offset();
    info.nbytes = a.data().length();
    if (static_cast<size_t>(i) < names.size()) info.name = names[i];
    file->arrays_.push_back(std::move(info));
  }
  return file;
}

absl::Status Client::DumpPickle(const std::string& path,
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
  absl::StatusOr<std::string> token = descriptors_->Send(fds);
  if (!token.ok()) return token.status();
  payload.Reset();  // the daemon has its own descriptor of it now
  request.set_fds_token(*token);

  v1::DumpReply reply;
  grpc::ClientContext context;
  absl::Status status = FromGrpc(session_->stub()->Dump(&context, request, &reply));
  if (!status.ok()) return status;
  const int holes = external ? static_cast<int>(arrays.size()) : 0;
  if (reply.external_offsets_size() != holes) {
    return absl::DataLossError(absl::StrCat(
        "persistd left ", reply.external_offsets_size(), " holes in ", path,
        " for ", holes, " arrays"));
  }
  for (int i = 0; i < holes; ++i) {
    const uint64_t offset = reply.external_offsets(i);
    absl::string_view bytes = arrays[i].bytes;
    if (offset > reply.file_bytes() || bytes.size() > reply.file_bytes() - offset) {
      return absl::DataLossError(absl::StrCat(
          "persistd placed array ", i, " of ", path, " past the end of the file"));
    }
    status = WriteAt(target->fd(), bytes, offset, path);
    if (!status.ok()) return status;
  }
  return target->Publish(reply.fsync());
}

absl::Status Client::DumpArrays(const std::string& path,
                                const std::vector<NamedArray>& arrays,
                                v1::Codec codec, int level) {
  PickleEmitter skeleton;
  skeleton.EmptyDict();
  if (!arrays.empty()) skeleton.Mark();
  std::vector<RawArray> raw;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const NamedArray& a = arrays[i];
    uint64_t itemsize = 0;
    if (a.dtype.size() < 3 || !absl::SimpleAtoi(a.dtype.substr(2), &itemsize)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "array '", a.name, "': dtype '", a.dtype,
          "' is not a numpy dtype string like '<f8'"));
    }
    uint64_t count = 1;
    for (uint64_t d : a.shape) count *= d;
    if (count * itemsize != a.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "array '", a.name, "': shape and dtype need ", count * itemsize,
          " bytes but ", a.bytes.size(), " were given"));
    }
    skeleton.Str(a.name);
    skeleton.PersistentId(static_cast<int64_t>(i));
    raw.push_back(RawArray{WrapperStatePickle(a.dtype, a.shape), a.bytes});
  }
  if (!arrays.empty()) skeleton.SetItems();
  return DumpPickle(path, skeleton.Finish(), raw, codec, level);
}

absl::StatusOr<v1::StatusReply> Client::Status() { return session_->GetStatus(); }

}  // namespace persistd
