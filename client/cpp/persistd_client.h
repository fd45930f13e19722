// The persistd C++ client: load any joblib file through the daemon and get
// zero-copy typed views of its arrays; dump arrays (or a pickle stream with
// arrays as persistent ids) as joblib files that Python's joblib and
// persistd read.
//
//   auto client = persistd::Client::Connect();           // default socket
//   auto file = (*client)->Load("/data/model.pkl");      // any codec
//   auto w = (*file)->View<float>("weights");            // no copy
//
// Files are opened and created by this process, never by the daemon: Load
// passes the daemon a descriptor of the file it opened, and a dump goes
// into a temp file this process created beside the target and then renamed
// over it (see proto/persistd.proto and descriptor_channel.h).
//
// A Client is thread-compatible (one thread at a time); LoadedFile is
// immutable and thread-safe. LoadedFile keeps its session alive, so it may
// outlive the Client that made it.
#ifndef PERSISTD_CLIENT_CPP_PERSISTD_CLIENT_H_
#define PERSISTD_CLIENT_CPP_PERSISTD_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/cpp/array_view.h"
#include "proto/persistd.pb.h"
#include "common/io/mapped_region.h"

namespace persistd {

class DescriptorChannel;
class Session;

// One loaded file: the rewritten pickle and its arrays, mapped read-only
// from the daemon's segment (or, for a result the daemon sent inline, held
// in memory). Holds a lease on the segment until destroyed.
class LoadedFile {
 public:
  ~LoadedFile();
  LoadedFile(const LoadedFile&) = delete;
  LoadedFile& operator=(const LoadedFile&) = delete;

  // The pickle stream, each array wrapper rewritten as a call of the
  // global `__persistd__ materialize` (see proto/persistd.proto).
  absl::string_view pickle() const { return pickle_; }
  const std::vector<ArrayInfo>& arrays() const { return arrays_; }
  uint64_t generation() const { return generation_; }
  bool cache_hit() const { return cache_hit_; }

  // The first array whose name (see ArrayInfo::name) is `name`.
  absl::StatusOr<const ArrayInfo*> Find(absl::string_view name) const;

  // A typed view; fails if T does not match the array's dtype.
  template <typename T>
  absl::StatusOr<ArrayView<T>> View(size_t index) const {
    if (index >= arrays_.size()) {
      return absl::OutOfRangeError(absl::StrCat(
          "array index ", index, " out of range: the file has ", arrays_.size()));
    }
    return MakeView<T>(arrays_[index]);
  }
  template <typename T>
  absl::StatusOr<ArrayView<T>> View(absl::string_view name) const {
    absl::StatusOr<const ArrayInfo*> info = Find(name);
    if (!info.ok()) return info.status();
    return MakeView<T>(**info);
  }

 private:
  friend class Client;
  LoadedFile() = default;

  template <typename T>
  static absl::StatusOr<ArrayView<T>> MakeView(const ArrayInfo& info) {
    absl::string_view want = NumpyDtype<T>();
    if (info.dtype != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "array '", info.name, "' has dtype '", info.dtype,
          "', which is not the requested C++ type (numpy '", want, "')"));
    }
    return ArrayView<T>(reinterpret_cast<const T*>(info.data), info.shape,
                        info.fortran_order);
  }

  std::shared_ptr<Session> session_;
  std::string lease_id_;
  MappedRegion segment_;
  // A segment the daemon returned in its reply instead of as a file.
  std::string inline_segment_;
  absl::string_view pickle_;
  std::vector<ArrayInfo> arrays_;
  uint64_t generation_ = 0;
  bool cache_hit_ = false;
};

class Client {
 public:
  // Connects to the daemon at `socket_path` (default: DefaultSocketPath())
  // and to its descriptor socket, and opens a session. Refuses a daemon of
  // another protocol version, and one that runs as another user (unless
  // root): it would get descriptors of our files.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      const std::string& socket_path = "");
  ~Client();

  // Loads a joblib (or pickle) file. Relative paths resolve in the cwd.
  // Only regular files: anything else (a FIFO, a device, a directory) is
  // InvalidArgument, at once.
  absl::StatusOr<std::unique_ptr<LoadedFile>> Load(const std::string& path);

  // An array to dump: C-ordered bytes of a numpy dtype.
  struct NamedArray {
    std::string name;
    std::string dtype;              // e.g. NumpyDtype<float>()
    std::vector<uint64_t> shape;
    absl::string_view bytes;        // prod(shape) * itemsize bytes
  };
  // Writes a joblib file holding {name: ndarray, ...}; `level` -1 is the
  // codec's default.
  //
  // The file appears at `path` all at once (or, on error, not at all), as
  // open(path, "wb") would have made it: a new file gets 0666 minus the
  // umask, an existing one keeps its mode, a symlink is written through.
  // Uncompressed, every array's bytes are copied once, from `bytes` to the
  // file.
  absl::Status DumpArrays(const std::string& path,
                          const std::vector<NamedArray>& arrays,
                          v1::Codec codec = v1::CODEC_NONE, int level = -1);

  // Low level: writes a joblib file from a pickle `skeleton` whose
  // persistent ids 0..n-1 stand for the arrays (state pickle + raw bytes).
  struct RawArray {
    std::string state_pickle;
    absl::string_view bytes;
  };
  absl::Status DumpPickle(const std::string& path, absl::string_view skeleton,
                          const std::vector<RawArray>& arrays,
                          v1::Codec codec = v1::CODEC_NONE, int level = -1);

  absl::StatusOr<v1::StatusReply> Status();

 private:
  Client(std::shared_ptr<Session> session,
         std::unique_ptr<DescriptorChannel> descriptors);
  std::shared_ptr<Session> session_;
  std::unique_ptr<DescriptorChannel> descriptors_;
};

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_PERSISTD_CLIENT_H_
