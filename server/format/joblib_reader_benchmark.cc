// Measures IndexJoblibStream (and WriteJoblibStream) on synthetic streams:
//  1. two 1 GiB arrays: the index must skip the data (milliseconds);
//  2. a ~100 MB skeleton of small objects (dicts of short strings, floats,
//     ints, tuples, memoized like the C pickler does) plus one array: the
//     symbolic stack's throughput.
#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/joblib_reader.h"
#include "server/format/joblib_writer.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string U32(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

// The NumpyArrayWrapper state of a 1-d uint8 array, protocol 4, no memo.
std::string Uint8State(uint32_t n) {
  return std::string("\x80\x04}(", 4) +
         "\x8c\x08subclass\x8c\x05numpy\x8c\x07ndarray\x93" +
         "\x8c\x05shapeJ" + U32(n) + "\x85" + "\x8c\x05order\x8c\x01" "C" +
         "\x8c\x05" "dtype\x8c\x05numpy\x8c\x05" "dtype\x93\x8c\x02u1\x89\x88\x87"
         "R(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" +
         std::string(1, '\0') + "tb" + "\x8c\x0a" "allow_mmap\x88" +
         "\x8c\x1bnumpy_array_alignment_bytesK\x10" + "u.";
}

// Writes small appends into a preallocated mapping and only advances over
// large ones: the benchmark's array data is never read, so its pages need
// not exist.
class MappedSink : public ByteSink {
 public:
  explicit MappedSink(char* base) : base_(base) {}
  absl::Status Append(absl::string_view data) override {
    if (data.size() < (1 << 20)) std::memcpy(base_ + size_, data.data(), data.size());
    size_ += data.size();
    return absl::OkStatus();
  }
  absl::Status Finish() override { return absl::OkStatus(); }
  uint64_t size() const { return size_; }

 private:
  char* base_;
  uint64_t size_ = 0;
};

void TwoLargeArrays() {
  const uint32_t n = 1u << 30;
  const uint64_t capacity = 2ull * n + (1 << 20);
  void* zeros = mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void* stream = mmap(nullptr, capacity, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (zeros == MAP_FAILED || stream == MAP_FAILED) {
    std::printf("mmap failed\n");
    return;
  }
  const std::string state = Uint8State(n);
  const std::string skeleton = std::string("\x80\x04]\x94(K\x00QK\x01Qe.", 13);
  const absl::string_view data(static_cast<const char*>(zeros), n);
  std::vector<DumpArraySpec> arrays = {
      {DumpArraySpec::Kind::kRaw, state, data},
      {DumpArraySpec::Kind::kRaw, state, data}};
  MappedSink sink(static_cast<char*>(stream));
  absl::StatusOr<uint64_t> written = WriteJoblibStream(skeleton, arrays, &sink);
  if (!written.ok()) {
    std::printf("write: %s\n", written.status().ToString().c_str());
    return;
  }
  for (int rep = 0; rep < 3; ++rep) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(
        absl::string_view(static_cast<const char*>(stream), *written));
    const double s = Seconds(start);
    std::printf("2 GiB stream, 2 arrays: index %.3f ms (%s, %zu arrays, "
                "skeleton %zu bytes)\n",
                s * 1e3, index.ok() ? "ok" : index.status().ToString().c_str(),
                index.ok() ? index->arrays.size() : 0,
                index.ok() ? index->skeleton.size() : 0);
  }
  munmap(zeros, n);
  munmap(stream, capacity);
}

void SmallObjects() {
  // [{'name': 'item%07d', 'value': <float>, 'id': <int>, 'pair': (i, i+1)},
  //  ..., <array>] as the C pickler writes it at protocol 4 (before framing).
  std::string skeleton = std::string("\x80\x04]\x94(", 5);
  const char* keys[] = {"name", "value", "id", "pair"};
  // Memo indices of the keys, set while pickling the first dict: the list
  // is 0, the dict 1, 'name' 2, 'item0000000' 3, 'value' 4, 'id' 5, ...
  const int kKeyMemo[] = {2, 4, 5, 6};
  const int items = 1600000;
  for (int i = 0; i < items; ++i) {
    skeleton += "}\x94(";
    for (int k = 0; k < 4; ++k) {
      if (i == 0) {
        skeleton += "\x8c";
        skeleton += static_cast<char>(std::strlen(keys[k]));
        skeleton += keys[k];
        skeleton += "\x94";
      } else {
        skeleton += "h";
        skeleton += static_cast<char>(kKeyMemo[k]);
      }
      switch (k) {
        case 0:
          skeleton += "\x8c\x0b" + absl::StrFormat("item%07d", i) + "\x94";
          break;
        case 1:
          skeleton += "G" + std::string(8, '\x3f');
          break;
        case 2:
          skeleton += "J" + U32(i);
          break;
        case 3:
          skeleton += "J" + U32(i) + "J" + U32(i + 1) + "\x86\x94";
          break;
      }
    }
    skeleton += "u";
    if (i % 1000 == 999) skeleton += "e(";
  }
  skeleton += std::string("K\x00Qe.", 5);
  const std::string state = Uint8State(1000);
  const std::string data(1000, 'x');
  std::vector<DumpArraySpec> arrays = {{DumpArraySpec::Kind::kRaw, state, data}};
  StringSink sink;
  Clock::time_point start = Clock::now();
  absl::StatusOr<uint64_t> written = WriteJoblibStream(skeleton, arrays, &sink);
  const double write_s = Seconds(start);
  if (!written.ok()) {
    std::printf("write: %s\n", written.status().ToString().c_str());
    return;
  }
  const double mb = sink.data().size() / 1e6;
  std::printf("%.1f MB of small objects: write %.0f MB/s\n", mb, mb / write_s);
  for (int rep = 0; rep < 5; ++rep) {
    start = Clock::now();
    PickleScanner scanner(sink.data());
    PickleOp op;
    size_t ops = 0;
    while (!scanner.AtEnd() && scanner.Next(&op).ok() && op.code != '.') ++ops;
    const double scan_s = Seconds(start);
    start = Clock::now();
    absl::StatusOr<IndexedStream> index = IndexJoblibStream(sink.data());
    const double index_s = Seconds(start);
    std::printf("  scan only %.0f MB/s; index %.0f MB/s (%s, %zu arrays)\n",
                mb / scan_s, mb / index_s,
                index.ok() ? "ok" : index.status().ToString().c_str(),
                index.ok() ? index->arrays.size() : 0);
  }
}

}  // namespace
}  // namespace persistd

int main() {
  persistd::TwoLargeArrays();
  persistd::SmallObjects();
  return 0;
}
