// The persistd C++ client: load any joblib file through the persistd daemon
// and read its arrays in place, through zero-copy typed views; dump arrays
// as joblib files that Python's joblib and persistd read.
//
//   #include "persistd/client.h"
//
//   absl::StatusOr<std::unique_ptr<persistd::Client>> client =
//       persistd::Client::Connect();                  // the default socket
//   absl::StatusOr<std::unique_ptr<persistd::File>> file =
//       (*client)->Load("/data/model.pkl");           // any codec
//   absl::StatusOr<persistd::ArrayView<float>> w =
//       (*file)->View<float>("weights");              // no copy
//
//   std::vector<int32_t> labels = {3, 1, 4};
//   absl::Status status = (*client)->Dump(
//       "/data/out.pkl", {{"weights", *w}, {"labels", labels}}, {"zlib", 3});
//
// This header includes only absl and the standard library; gRPC, the
// protocol and the POSIX plumbing stay behind it (link
// //client/cpp:persistd_client).
//
// How it works: files are opened and created by this process, never by the
// daemon. Load passes the daemon a descriptor of the file; the daemon
// decompresses it once into an immutable shared segment (later loads of an
// unchanged file, by any process, reuse it) that this process maps
// read-only, so an ArrayView points into the page cache. Dump creates a
// temp file beside the target, has the daemon write joblib's stream into
// it (compressing if asked), writes uncompressed array bytes into it
// straight from the caller's buffers, and renames it over the target.
//
// Thread safety: a Client is thread-safe; any number of threads may Load,
// Dump and ask Status through one Client at once. A File is immutable
// after Load and thread-safe; it keeps its daemon session alive and may
// outlive the Client that made it. ArrayView and ArrayRef are values that
// borrow memory: an ArrayView is valid while its File lives, an ArrayRef
// while the buffer it names does.
//
// Errors are absl::Status values whose messages say what to do: e.g.
// Unavailable "persistd is not running at ... start it with ...",
// NotFound "open /x.pkl: No such file or directory", InvalidArgument for a
// view of the wrong type or a malformed compression spec, DataLoss for a
// corrupt file. Nothing here throws or aborts on bad input.
#ifndef PERSISTD_CLIENT_H_
#define PERSISTD_CLIENT_H_

#include <complex>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace persistd {

namespace internal {
class Connection;
class Lease;
}  // namespace internal

// Dtype strings below ("<f8") name little-endian data, as numpy does on
// this machine; a big-endian port would have to swap them.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "persistd's dtype names assume a little-endian machine");
// numpy's bool is one byte, 0 or 1; so must C++'s be for a zero-copy view.
static_assert(sizeof(bool) == 1, "numpy's |b1 needs a one-byte bool");

// numpy's dtype.str for a C++ element type, or nullptr when the type has
// no numpy counterpart (float16, datetimes, strings: use File::Bytes and
// ArrayRef::Raw for those). Every integer type maps by its size and
// signedness, so int64_t, long and long long all mean "<i8" on Linux.
template <typename T>
inline constexpr const char* kNumpyDtype = nullptr;
template <> inline constexpr const char* kNumpyDtype<bool> = "|b1";
template <> inline constexpr const char* kNumpyDtype<signed char> = "|i1";
template <> inline constexpr const char* kNumpyDtype<unsigned char> = "|u1";
template <> inline constexpr const char* kNumpyDtype<short> = "<i2";
template <> inline constexpr const char* kNumpyDtype<unsigned short> = "<u2";
template <> inline constexpr const char* kNumpyDtype<int> = "<i4";
template <> inline constexpr const char* kNumpyDtype<unsigned int> = "<u4";
template <>
inline constexpr const char* kNumpyDtype<long> = sizeof(long) == 8 ? "<i8" : "<i4";
template <>
inline constexpr const char* kNumpyDtype<unsigned long> =
    sizeof(long) == 8 ? "<u8" : "<u4";
template <> inline constexpr const char* kNumpyDtype<long long> = "<i8";
template <> inline constexpr const char* kNumpyDtype<unsigned long long> = "<u8";
template <> inline constexpr const char* kNumpyDtype<float> = "<f4";
template <> inline constexpr const char* kNumpyDtype<double> = "<f8";
template <> inline constexpr const char* kNumpyDtype<std::complex<float>> = "<c8";
template <> inline constexpr const char* kNumpyDtype<std::complex<double>> = "<c16";

// How a multi-dimensional array's elements are laid out: C (row-major,
// the last index varies fastest) or Fortran (column-major, the first
// index varies fastest). numpy writes an array in Fortran order when it
// is Fortran-contiguous and not C-contiguous, and persistd keeps it so.
enum class Order { kC, kFortran };

// A read-only, typed view of one array's elements where they lie: in the
// daemon's segment, mapped by the File the view came from.
//
// Invariant: data() points at size() elements of T, stored in order();
// the view never owns them, and is valid only while its File lives.
template <typename T>
class ArrayView {
 public:
  ArrayView() = default;
  ArrayView(const T* data, std::vector<uint64_t> shape, Order order)
      : data_(data), shape_(std::move(shape)), order_(order) {}

  const T* data() const { return data_; }
  const std::vector<uint64_t>& shape() const { return shape_; }
  Order order() const { return order_; }
  size_t ndim() const { return shape_.size(); }
  // Elements in all; 1 for a 0-d array, 0 when a dimension is 0.
  uint64_t size() const {
    uint64_t n = 1;
    for (uint64_t d : shape_) n *= d;
    return n;
  }
  bool empty() const { return size() == 0; }

  // Flat access in storage order (see order()). REQUIRES: i < size().
  const T& operator[](uint64_t i) const { return data_[i]; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size(); }
  absl::Span<const T> span() const { return absl::Span<const T>(data_, size()); }

  // The element at a multi-index, whatever the order: view.At({i, j}).
  // REQUIRES: index.size() == ndim() and index[k] < shape()[k].
  const T& At(absl::Span<const uint64_t> index) const {
    uint64_t flat = 0;
    if (order_ == Order::kC) {
      for (size_t k = 0; k < shape_.size(); ++k) flat = flat * shape_[k] + index[k];
    } else {
      for (size_t k = shape_.size(); k-- > 0;) flat = flat * shape_[k] + index[k];
    }
    return data_[flat];
  }

 private:
  const T* data_ = nullptr;
  std::vector<uint64_t> shape_;
  Order order_ = Order::kC;
};

// What Load found out about one array of a file.
struct ArrayInfo {
  enum class Kind {
    kRaw,     // elements in the segment: View<T>() and Bytes() read them
    kObject,  // dtype=object: a nested pickle only Python can unpickle
    kLegacy,  // joblib < 0.10: data in a companion file, not read here
  };

  // Where the array sits in the file's object graph, e.g. ["weights"],
  // ["trees"][3]["value"] or .coef_ (an attribute of the value), the
  // syntax Python would index with, with double-quoted keys. Arguments an
  // object was constructed from read .__args__[i], and a state passed to
  // __setstate__ reads .__state__. "" is the value itself (a file that
  // holds one array); "?" where the pickle does not tell (e.g. an array
  // reached through a recursive structure).
  std::string path;
  // The last dict key or attribute name on `path` ("weights", "coef_"),
  // or "" when the path ends in a list index or is unknown.
  std::string name;
  Kind kind = Kind::kRaw;
  // numpy's dtype.str, e.g. "<f8", "|u1", "<c16", "|S10"; "|O" for object
  // arrays; "" where it cannot be stated exactly (structured dtypes, and
  // kLegacy arrays).
  std::string dtype;
  uint64_t itemsize = 0;
  std::vector<uint64_t> shape;  // empty for a 0-d array
  Order order = Order::kC;
  uint64_t nbytes = 0;  // bytes in the segment (kObject: the nested pickle)

  uint64_t size() const {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }
};

// One loaded file: its arrays, mapped read-only from the daemon's segment.
// Holds a lease on the segment, so the daemon keeps it until this File is
// destroyed (and its session is over).
//
// Invariant: arrays() and the bytes they describe never change; every
// kRaw array's bytes lie inside the mapping this File owns.
class File {
 public:
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // The path given to Load.
  const std::string& path() const { return path_; }
  // The arrays in stream order (the order Python's load materializes them).
  const std::vector<ArrayInfo>& arrays() const { return arrays_; }

  // The index of the array whose path is `key`, else of the one array
  // whose name is `key`. NotFound lists the paths there are;
  // InvalidArgument says when several arrays share the name.
  absl::StatusOr<size_t> Find(absl::string_view key) const;

  // A typed view of array `index` (or of the array Find(key) names).
  // InvalidArgument when T is not the array's dtype: a view never
  // reinterprets bytes.
  template <typename T>
  absl::StatusOr<ArrayView<T>> View(size_t index) const {
    static_assert(kNumpyDtype<T> != nullptr,
                  "T has no numpy dtype: read such arrays with File::Bytes()");
    absl::Status usable = CheckView(index, kNumpyDtype<T>, alignof(T));
    if (!usable.ok()) return usable;
    const ArrayInfo& info = arrays_[index];
    return ArrayView<T>(reinterpret_cast<const T*>(bytes_[index].data()),
                        info.shape, info.order);
  }
  template <typename T>
  absl::StatusOr<ArrayView<T>> View(absl::string_view key) const {
    absl::StatusOr<size_t> index = Find(key);
    if (!index.ok()) return index.status();
    return View<T>(*index);
  }

  // The raw bytes of a kRaw array (any dtype, e.g. "<f2" or "|S8"), or the
  // nested pickle of a kObject one, in storage order. Zero-copy.
  absl::StatusOr<absl::string_view> Bytes(size_t index) const;

  // The value's pickle with each array wrapper replaced by a call of the
  // global `__persistd__ materialize` (see proto/persistd.proto), for
  // callers that walk the object graph themselves.
  absl::string_view pickle() const { return pickle_; }
  // Changes whenever the file changes (on disk, between loads).
  uint64_t generation() const { return generation_; }
  // Whether the daemon served an existing segment (no decompression).
  bool cache_hit() const { return cache_hit_; }

 private:
  friend class Client;
  File() = default;

  // OK iff `index` names a kRaw array of dtype `dtype` whose data is
  // aligned to `alignment`.
  absl::Status CheckView(size_t index, absl::string_view dtype,
                         size_t alignment) const;

  std::string path_;
  std::vector<ArrayInfo> arrays_;
  std::vector<absl::string_view> bytes_;  // parallel to arrays_
  absl::string_view pickle_;
  uint64_t generation_ = 0;
  bool cache_hit_ = false;
  // Owns the mapping all the views above point into, and the lease.
  std::unique_ptr<internal::Lease> lease_;
};

// An array to dump: borrowed elements and their numpy description.
//
// Invariant: bytes() is the caller's memory (never copied here); for the
// typed constructors it holds prod(shape) elements of T in order().
class ArrayRef {
 public:
  // prod(shape) elements of T at `data`; an empty shape is a 0-d array.
  template <typename T>
  ArrayRef(const T* data, std::vector<uint64_t> shape, Order order = Order::kC)
      : dtype_(kNumpyDtype<T>),
        shape_(std::move(shape)),
        order_(order),
        bytes_(reinterpret_cast<const char*>(data), sizeof(T) * Count(shape_)) {
    static_assert(kNumpyDtype<T> != nullptr,
                  "T has no numpy dtype: dump such arrays with ArrayRef::Raw()");
  }
  // A 1-d array of a vector's elements.
  template <typename T, typename Alloc>
  ArrayRef(const std::vector<T, Alloc>& v)  // NOLINT: {"x", v} reads best
      : ArrayRef(v.data(), {static_cast<uint64_t>(v.size())}) {
    static_assert(!std::is_same<T, bool>::value,
                  "std::vector<bool> packs bits: dump a bool[] or uint8_t");
  }
  // A loaded array, dumped again (e.g. into another file).
  template <typename T>
  ArrayRef(const ArrayView<T>& view)  // NOLINT: see above
      : ArrayRef(view.data(), view.shape(), view.order()) {}

  // `bytes` of any numeric numpy dtype ("<f2", ">i4", "<c16", ...): kinds
  // b, i, u, f and c. Dump checks that the bytes match dtype and shape.
  static ArrayRef Raw(std::string dtype, std::vector<uint64_t> shape,
                      absl::string_view bytes, Order order = Order::kC) {
    return ArrayRef(std::move(dtype), std::move(shape), order, bytes);
  }

  const std::string& dtype() const { return dtype_; }
  const std::vector<uint64_t>& shape() const { return shape_; }
  Order order() const { return order_; }
  absl::string_view bytes() const { return bytes_; }

 private:
  ArrayRef(std::string dtype, std::vector<uint64_t> shape, Order order,
           absl::string_view bytes)
      : dtype_(std::move(dtype)),
        shape_(std::move(shape)),
        order_(order),
        bytes_(bytes) {}
  // Wraps on overflow; Dump recomputes it with checks and refuses then.
  static uint64_t Count(const std::vector<uint64_t>& shape) {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return n;
  }

  std::string dtype_;
  std::vector<uint64_t> shape_;
  Order order_;
  absl::string_view bytes_;
};

// One entry of the dict Dump writes: {name: array, ...}.
struct NamedArray {
  std::string name;
  ArrayRef array;
};

// How Dump compresses, as Python's persistd.dump(compress=...) says it: a
// method name, "lz4", or a {method, level} pair, {"zlib", 3}. Methods:
// "zlib", "gzip", "bz2", "lzma", "xz", "lz4" (what joblib reads) and
// "zstd" (persistd only). Level -1 is the method's default, 0 means no
// compression (as joblib's ("zlib", 0) does), 1-9 trade speed for size.
// Compression() and "none" (or "") write an uncompressed file, the fastest
// to load: the daemon can then serve its arrays without a copy.
struct Compression {
  Compression() = default;
  Compression(const char* method)  // NOLINT: Dump(path, arrays, "lz4")
      : method(method == nullptr ? "" : method) {}
  Compression(std::string method)  // NOLINT: see above
      : method(std::move(method)) {}
  Compression(std::string method, int level)
      : method(std::move(method)), level(level) {}

  std::string method;
  int level = -1;
};

// The daemon's answer to Status(): its identity and cache statistics.
struct DaemonStatus {
  std::string version;
  uint32_t protocol = 0;
  int32_t pid = 0;
  std::string socket_path;
  std::string store_dir;
  uint64_t uptime_seconds = 0;
  uint32_t sessions = 0;
  uint32_t segments = 0;          // cached decompressed files
  uint32_t leased_segments = 0;   // of those, in use by a client
  uint64_t cache_bytes = 0;
  uint64_t cache_budget_bytes = 0;
  uint64_t loads = 0;
  uint64_t cache_hits = 0;
  uint64_t dumps = 0;
  uint64_t evictions = 0;
  bool fsync = false;             // dumps are fsynced before publication
};

// A connection to one persistd daemon. Thread-safe (see the top of this
// file).
class Client {
 public:
  // Connects to the daemon listening at `socket_path` (default:
  // $PERSISTD_SOCKET, else $XDG_RUNTIME_DIR/persistd.sock, else
  // /tmp/persistd-$UID/persistd.sock) and opens a session. Refuses a
  // daemon of another protocol version, and a descriptor socket run by
  // another user (unless root): it would get descriptors of our files.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      absl::string_view socket_path = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Loads a joblib file (any joblib version, any codec) or a plain pickle.
  // Relative paths resolve against the working directory. Only regular
  // files: anything else (a FIFO, a device, a directory) is
  // InvalidArgument, at once.
  absl::StatusOr<std::unique_ptr<File>> Load(absl::string_view path);

  // Writes a joblib file holding the dict {name: ndarray, ...}, in the
  // order given, that joblib.load and persistd.load read.
  //
  // The file appears at `path` all at once (or, on error, not at all), as
  // open(path, "wb") would have made it: a new file gets 0666 minus the
  // umask, an existing one keeps its mode, a symlink is written through.
  // Uncompressed, each array's bytes are copied once, from its buffer into
  // the file.
  absl::Status Dump(absl::string_view path, const std::vector<NamedArray>& arrays,
                    const Compression& compress = Compression());

  // The daemon's identity and statistics.
  absl::StatusOr<DaemonStatus> Status();

  // The socket this client is connected to.
  const std::string& socket_path() const;

 private:
  explicit Client(std::shared_ptr<internal::Connection> connection);

  // Shared with every File this client loaded: they release their leases
  // over it, even after the Client is gone.
  std::shared_ptr<internal::Connection> connection_;
};

}  // namespace persistd

#endif  // PERSISTD_CLIENT_H_
