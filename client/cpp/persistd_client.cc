#include "client/cpp/persistd_client.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <cstring>
#include <map>

#include "absl/strings/numbers.h"
#include "client/cpp/pickle_emitter.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "proto/persistd.grpc.pb.h"
#include "server/default_paths.h"
#include "server/format/pickle_scanner.h"
#include "server/io/errno_status.h"
#include "server/io/scoped_fd.h"

namespace persistd {

namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return absl::StrCat(cwd, "/", path);
}

uint64_t AlignUp(uint64_t n) { return (n + 63) / 64 * 64; }

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

// One connection and its Attach stream; leases live as long as it does.
class Session {
 public:
  static absl::StatusOr<std::shared_ptr<Session>> Open(const std::string& socket) {
    auto session = std::shared_ptr<Session>(new Session());
    session->channel_ = grpc::CreateChannel(absl::StrCat("unix:", socket),
                                            grpc::InsecureChannelCredentials());
    session->stub_ = v1::Persistd::NewStub(session->channel_);
    v1::AttachRequest request;
    request.set_pid(::getpid());
    request.set_client("cpp/0.1.0");
    session->attach_ = session->stub_->Attach(&session->attach_context_, request);
    v1::AttachEvent event;
    if (!session->attach_->Read(&event)) {
      grpc::Status status = session->attach_->Finish();
      session->attach_.reset();
      return absl::UnavailableError(absl::StrCat(
          "persistd is not running at ", socket, " (", status.error_message(),
          "): start it with `persistd --socket ", socket, "`"));
    }
    session->id_ = event.session_id();
    return session;
  }

  ~Session() {
    if (attach_) {
      attach_context_.TryCancel();
      attach_->Finish();
    }
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

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    const std::string& socket_path) {
  std::string socket = socket_path.empty() ? DefaultSocketPath() : socket_path;
  absl::StatusOr<std::shared_ptr<Session>> session = Session::Open(socket);
  if (!session.ok()) return session.status();
  return std::unique_ptr<Client>(new Client(*std::move(session)));
}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<LoadedFile>> Client::Load(const std::string& path) {
  v1::LoadRequest request;
  request.set_session_id(session_->id());
  request.set_path(Absolute(path));
  v1::LoadReply reply;
  grpc::ClientContext context;
  absl::Status status = FromGrpc(session_->stub()->Load(&context, request, &reply));
  if (!status.ok()) return status;

  std::unique_ptr<LoadedFile> file(new LoadedFile());
  file->session_ = session_;
  file->lease_id_ = reply.lease_id();  // released by ~LoadedFile from here on
  file->generation_ = reply.generation();
  file->cache_hit_ = reply.cache_hit();
  ScopedFd fd(::open(reply.segment_path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open segment", reply.segment_path(), errno);
  absl::StatusOr<MappedRegion> region =
      MappedRegion::MapReadOnly(fd.get(), reply.segment_size(), reply.segment_path());
  if (!region.ok()) return region.status();
  file->segment_ = *std::move(region);
  absl::string_view segment = file->segment_.view();
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
  v1::CommitDumpRequest commit;
  uint64_t offset = 0;
  commit.mutable_skeleton()->set_offset(0);
  commit.mutable_skeleton()->set_length(skeleton.size());
  offset += skeleton.size();
  for (const RawArray& a : arrays) {
    v1::DumpArray* d = commit.add_arrays();
    d->set_kind(v1::DumpArray::RAW);
    d->mutable_state()->set_offset(offset);
    d->mutable_state()->set_length(a.state_pickle.size());
    offset = AlignUp(offset + a.state_pickle.size());
    d->mutable_data()->set_offset(offset);
    d->mutable_data()->set_length(a.bytes.size());
    offset += a.bytes.size();
  }

  v1::CreateStagingRequest create;
  create.set_size(offset);
  v1::CreateStagingReply staging;
  {
    grpc::ClientContext context;
    absl::Status status =
        FromGrpc(session_->stub()->CreateStaging(&context, create, &staging));
    if (!status.ok()) return status;
  }
  // Whatever happens next, the staging file goes.
  struct Dropper {
    Session* session;
    std::string id;
    ~Dropper() {
      grpc::ClientContext context;
      v1::DropStagingRequest request;
      request.set_staging_id(id);
      v1::DropStagingReply reply;
      session->stub()->DropStaging(&context, request, &reply);
    }
  } dropper{session_.get(), staging.staging_id()};

  {
    ScopedFd fd(::open(staging.path().c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open staging", staging.path(), errno);
    absl::StatusOr<MappedRegion> map =
        MappedRegion::MapReadWrite(fd.get(), offset, staging.path());
    if (!map.ok()) return map.status();
    char* base = map->data();
    auto put = [base](const v1::Extent& e, absl::string_view bytes) {
      if (!bytes.empty()) memcpy(base + e.offset(), bytes.data(), bytes.size());
    };
    put(commit.skeleton(), skeleton);
    for (size_t i = 0; i < arrays.size(); ++i) {
      put(commit.arrays(i).state(), arrays[i].state_pickle);
      put(commit.arrays(i).data(), arrays[i].bytes);
    }
  }
  commit.set_staging_id(staging.staging_id());
  commit.set_codec(codec);
  commit.set_level(level);
  commit.set_target_path(Absolute(path));
  v1::CommitDumpReply reply;
  grpc::ClientContext context;
  return FromGrpc(session_->stub()->CommitDump(&context, commit, &reply));
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

absl::StatusOr<v1::StatusReply> Client::Status() {
  v1::StatusReply reply;
  grpc::ClientContext context;
  absl::Status status =
      FromGrpc(session_->stub()->Status(&context, v1::StatusRequest(), &reply));
  if (!status.ok()) return status;
  return reply;
}

}  // namespace persistd
