// The public API (include/persistd/client.h) on top of internal::Connection:
// Load replies become Files with paths and checked views, and named arrays
// become the skeleton and wrapper states of a joblib dump.
#include "persistd/client.h"

#include <cstdint>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cpp/connection.h"
#include "client/cpp/dump_spec.h"
#include "client/cpp/pickle_emitter.h"

namespace persistd {

namespace {

// The last key or attribute of a path in ArrayInfo::path syntax:
// ["a"]["b"] -> b, .coef_ -> coef_, [3] -> "", ? -> "".
std::string NameOfPath(absl::string_view path) {
  if (absl::EndsWith(path, "\"]")) {
    // Walk back to the opening quote, past escaped quotes.
    size_t i = path.size() - 2;
    while (i > 0) {
      --i;
      if (path[i] != '"') continue;
      size_t backslashes = 0;
      for (size_t j = i; j > 0 && path[j - 1] == '\\'; --j) ++backslashes;
      if (backslashes % 2 == 0) break;
    }
    std::string name;
    for (size_t k = i + 1; k + 2 < path.size(); ++k) {
      if (path[k] == '\\' && k + 3 < path.size()) ++k;
      name.push_back(path[k]);
    }
    return name;
  }
  const size_t dot = path.rfind('.');
  if (dot == absl::string_view::npos || path.find_first_of("[]", dot) != path.npos) {
    return "";
  }
  return std::string(path.substr(dot + 1));
}

// How an array is named in messages: its path, else its index.
std::string Describe(const ArrayInfo& info, size_t index) {
  if (info.path.empty()) return absl::StrCat("array ", index, " (the value itself)");
  if (info.path == "?") return absl::StrCat("array ", index);
  return absl::StrCat("array ", info.path);
}

}  // namespace

// -- File ---------------------------------------------------------------------

File::~File() = default;

absl::StatusOr<size_t> File::Find(absl::string_view key) const {
  std::vector<size_t> named;
  for (size_t i = 0; i < arrays_.size(); ++i) {
    if (arrays_[i].path == key) return i;
    if (arrays_[i].name == key) named.push_back(i);
  }
  if (named.size() == 1) return named[0];
  if (named.size() > 1) {
    std::vector<std::string> paths;
    for (size_t i : named) paths.push_back(arrays_[i].path);
    return absl::InvalidArgumentError(absl::StrCat(
        named.size(), " arrays of ", path_, " are named '", key, "' (",
        absl::StrJoin(paths, ", "), "): pass one of these paths instead"));
  }
  if (arrays_.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no array '", key, "' in ", path_, ": it holds no arrays"));
  }
  constexpr size_t kListed = 10;
  std::vector<std::string> paths;
  for (size_t i = 0; i < arrays_.size() && i < kListed; ++i) {
    paths.push_back(arrays_[i].path.empty() ? "\"\" (the value)" : arrays_[i].path);
  }
  return absl::NotFoundError(absl::StrCat(
      "no array '", key, "' in ", path_, "; its arrays are ",
      absl::StrJoin(paths, ", "), arrays_.size() > kListed ? ", ..." : "",
      " (pass a path or a name)"));
}

absl::StatusOr<absl::string_view> File::Bytes(size_t index) const {
  if (index >= arrays_.size()) {
    return absl::OutOfRangeError(absl::StrCat(
        "array index ", index, " is out of range: ", path_, " has ",
        arrays_.size(), " arrays"));
  }
  if (arrays_[index].kind == ArrayInfo::Kind::kLegacy) {
    return absl::FailedPreconditionError(absl::StrCat(
        Describe(arrays_[index], index), " of ", path_,
        " was written by joblib < 0.10, whose array data lives in companion "
        "files; load it with Python, or dump it again with a newer joblib"));
  }
  return bytes_[index];
}

absl::Status File::CheckView(size_t index, absl::string_view dtype,
                             size_t alignment) const {
  absl::StatusOr<absl::string_view> bytes = Bytes(index);
  if (!bytes.ok()) return bytes.status();
  const ArrayInfo& info = arrays_[index];
  const std::string what = absl::StrCat(Describe(info, index), " of ", path_);
  if (info.kind == ArrayInfo::Kind::kObject) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " holds Python objects (dtype=object): only Python can unpickle "
        "it (File::Bytes() gives its pickle)"));
  }
  if (info.dtype != dtype) {
    absl::string_view type = CppTypeOf(info.dtype);
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has dtype '", info.dtype, "', not '", dtype, "': ",
        type.empty() ? "no C++ type matches it; read it with File::Bytes()"
                     : absl::StrCat("view it as ", type)));
  }
  // The daemon promises nbytes == prod(shape) * itemsize for raw arrays;
  // a view must not take a broken reply's word for it.
  absl::StatusOr<uint64_t> size = ByteSize(info.shape, info.itemsize);
  if (!size.ok() || *size != bytes->size()) {
    return absl::DataLossError(absl::StrCat(
        what, ": its shape and dtype do not match the ", bytes->size(),
        " bytes the daemon holds; evict the file's segment (persistctl cache "
        "evict) and load it again"));
  }
  if (reinterpret_cast<uintptr_t>(bytes->data()) % alignment != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " is not aligned for its type in the daemon's segment; copy it "
        "out of File::Bytes() instead"));
  }
  return absl::OkStatus();
}

// -- Client -------------------------------------------------------------------

Client::Client(std::shared_ptr<internal::Connection> connection)
    : connection_(std::move(connection)) {}

Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(absl::string_view socket_path) {
  absl::StatusOr<std::shared_ptr<internal::Connection>> connection =
      internal::Connection::Open(std::string(socket_path));
  if (!connection.ok()) return connection.status();
  return std::unique_ptr<Client>(new Client(*std::move(connection)));
}

const std::string& Client::socket_path() const { return connection_->socket_path(); }

absl::StatusOr<std::unique_ptr<File>> Client::Load(absl::string_view path) {
  absl::StatusOr<internal::Connection::Loaded> loaded =
      connection_->Load(std::string(path));
  if (!loaded.ok()) return loaded.status();
  const v1::LoadReply& reply = loaded->reply;
  // Connection::Load checked that every extent lies in the segment.
  const absl::string_view segment = loaded->lease->segment();
  std::unique_ptr<File> file(new File());
  file->path_ = std::string(path);
  file->generation_ = reply.generation();
  file->cache_hit_ = reply.cache_hit();
  file->pickle_ = segment.substr(reply.skeleton().offset(), reply.skeleton().length());
  for (int i = 0; i < reply.arrays_size(); ++i) {
    const v1::LoadArray& a = reply.arrays(i);
    ArrayInfo info;
    // The daemon names each array's place (LoadArray.path), so the client
    // never walks the pickle itself.
    info.path = a.path();
    info.name = NameOfPath(info.path);
    switch (a.kind()) {
      case v1::LoadArray::RAW:
        info.kind = ArrayInfo::Kind::kRaw;
        info.dtype = a.dtype();
        break;
      case v1::LoadArray::OBJECT_STREAM:
        info.kind = ArrayInfo::Kind::kObject;
        info.dtype = "|O";
        break;
      default:
        info.kind = ArrayInfo::Kind::kLegacy;
        break;
    }
    info.itemsize = a.itemsize();
    info.shape.assign(a.shape().begin(), a.shape().end());
    info.order = a.fortran_order() ? Order::kFortran : Order::kC;
    info.nbytes = a.data().length();
    absl::string_view bytes = segment.substr(a.data().offset(), a.data().length());
    file->bytes_.push_back(bytes);
    file->arrays_.push_back(std::move(info));
  }
  file->lease_ = std::move(loaded->lease);
  return file;
}

absl::Status Client::Dump(absl::string_view path, const std::vector<NamedArray>& arrays,
                          const Compression& compress) {
  absl::StatusOr<CodecChoice> codec = ParseCompression(compress.method, compress.level);
  if (!codec.ok()) return codec.status();
  // The skeleton is {name: persistent id i, ...}, in the caller's order.
  PickleEmitter skeleton;
  skeleton.EmptyDict();
  if (!arrays.empty()) skeleton.Mark();
  std::vector<internal::Connection::RawArray> raw;
  std::set<absl::string_view> names;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const NamedArray& a = arrays[i];
    if (!names.insert(a.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the name '", a.name, "' is given to two arrays: a dict keeps one, so "
          "name them apart"));
    }
    const std::string what = absl::StrCat("array '", a.name, "'");
    absl::StatusOr<uint64_t> itemsize = NumericItemSize(a.array.dtype());
    if (!itemsize.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", itemsize.status().message()));
    }
    absl::StatusOr<uint64_t> size = ByteSize(a.array.shape(), *itemsize);
    if (!size.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", size.status().message()));
    }
    if (*size != a.array.bytes().size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": shape (", absl::StrJoin(a.array.shape(), ", "), ") of dtype '",
          a.array.dtype(), "' needs ", *size, " bytes but ", a.array.bytes().size(),
          " were given"));
    }
    // numpy calls an array with at most one dimension longer than 1 both
    // C- and Fortran-contiguous, and joblib then writes 'C': so do we.
    size_t long_dims = 0;
    for (uint64_t d : a.array.shape()) long_dims += d > 1 ? 1 : 0;
    const char order = a.array.order() == Order::kFortran && long_dims > 1 ? 'F' : 'C';
    skeleton.Str(a.name);
    skeleton.PersistentId(static_cast<int64_t>(i));
    raw.push_back({WrapperStatePickle(a.array.dtype(), a.array.shape(), order),
                   a.array.bytes()});
  }
  if (!arrays.empty()) skeleton.SetItems();
  return connection_->DumpPickle(std::string(path), skeleton.Finish(), raw,
                                 codec->codec, codec->level);
}

absl::StatusOr<DaemonStatus> Client::Status() {
  absl::StatusOr<v1::StatusReply> reply = connection_->Status();
  if (!reply.ok()) return reply.status();
  DaemonStatus out;
  out.version = reply->version();
  out.protocol = reply->protocol();
  out.pid = reply->pid();
  out.socket_path = reply->socket_path();
  out.store_dir = reply->store_dir();
  out.uptime_seconds = reply->uptime_seconds();
  out.sessions = reply->sessions();
  out.segments = reply->segments();
  out.leased_segments = reply->leased_segments();
  out.cache_bytes = reply->cache_bytes();
  out.cache_budget_bytes = reply->cache_budget_bytes();
  out.loads = reply->loads();
  out.cache_hits = reply->cache_hits();
  out.dumps = reply->dumps();
  out.evictions = reply->evictions();
  out.fsync = reply->fsync();
  return out;
}

}  // namespace persistd
