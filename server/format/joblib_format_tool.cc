// joblib_format_tool: a command-line driver of the format layer, so that
// Python scripts can check it against real joblib (index a file joblib
// wrote and unpickle the rewritten pickle; write a stream and joblib.load
// it).
//
//   joblib_format_tool index STREAM SKELETON_OUT
//       Indexes STREAM, writes the rewritten pickle to SKELETON_OUT and
//       prints "end <offset>" and one "array <kind> <offset> <length>
//       <padded> <dtype> <itemsize> <shape> <order> <path>" line per array
//       (kind: raw, object, legacy; dtype "-" when empty; shape
//       "d0,d1,..." or "()"; order C or F; path "-" when empty), as in
//       testdata/*.idx plus the path.
//   joblib_format_tool write SKELETON OUT [raw|object STATE DATA]...
//       Writes the joblib stream for SKELETON and the arrays to OUT and
//       prints "bytes <n>".
// Errors go to stderr with exit status 1.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "server/format/joblib_reader.h"
#include "server/format/joblib_writer.h"
#include "server/io/byte_sink.h"

namespace {

bool ReadFile(const char* path, std::string* out) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  std::fclose(f);
  return true;
}

bool WriteFile(const char* path, const std::string& data) {
  FILE* f = std::fopen(path, "wb");
  if (f == nullptr) return false;
  bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  return std::fclose(f) == 0 && ok;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return 1;
}

int Index(const char* stream_path, const char* skeleton_path) {
  std::string stream;
  if (!ReadFile(stream_path, &stream)) return Fail("cannot read input");
  absl::StatusOr<persistd::IndexedStream> index =
      persistd::IndexJoblibStream(stream);
  if (!index.ok()) return Fail(index.status().ToString());
  if (!WriteFile(skeleton_path, index->skeleton)) return Fail("cannot write");
  std::printf("end %llu\n", static_cast<unsigned long long>(index->end_offset));
  for (const persistd::LoadArrayLocation& a : index->arrays) {
    const char* kind =
        a.kind == persistd::LoadArrayLocation::Kind::kRaw      ? "raw"
        : a.kind == persistd::LoadArrayLocation::Kind::kObjectStream ? "object"
                                                                     : "legacy";
    std::string shape;
    for (uint64_t dim : a.shape) {
      if (!shape.empty()) shape += ",";
      shape += std::to_string(dim);
    }
    std::printf("array %s %llu %llu %d %s %llu %s %c %s\n", kind,
                static_cast<unsigned long long>(a.offset),
                static_cast<unsigned long long>(a.length), a.padded ? 1 : 0,
                a.dtype.empty() ? "-" : a.dtype.c_str(),
                static_cast<unsigned long long>(a.itemsize),
                shape.empty() ? "()" : shape.c_str(),
                a.fortran_order ? 'F' : 'C',
                a.path.empty() ? "-" : a.path.c_str());
  }
  return 0;
}

int Write(int argc, char** argv) {
  std::string skeleton;
  if (!ReadFile(argv[2], &skeleton)) return Fail("cannot read skeleton");
  std::vector<std::string> buffers;
  buffers.reserve(argc);
  std::vector<persistd::DumpArraySpec> arrays;
  for (int i = 4; i + 2 < argc; i += 3) {
    persistd::DumpArraySpec spec;
    spec.kind = std::strcmp(argv[i], "object") == 0
                    ? persistd::DumpArraySpec::Kind::kObjectStream
                    : persistd::DumpArraySpec::Kind::kRaw;
    buffers.emplace_back();
    if (!ReadFile(argv[i + 1], &buffers.back())) return Fail("cannot read");
    spec.state_pickle = buffers.back();
    buffers.emplace_back();
    if (!ReadFile(argv[i + 2], &buffers.back())) return Fail("cannot read");
    spec.data = buffers.back();
    arrays.push_back(spec);
  }
  persistd::StringSink sink;
  absl::StatusOr<uint64_t> n =
      persistd::WriteJoblibStream(skeleton, arrays, &sink);
  if (!n.ok()) return Fail(n.status().ToString());
  if (*n != sink.data().size()) return Fail("byte count mismatch");
  if (!WriteFile(argv[3], sink.data())) return Fail("cannot write output");
  std::printf("bytes %llu\n", static_cast<unsigned long long>(*n));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "index") == 0) {
    return Index(argv[2], argv[3]);
  }
  if (argc >= 4 && std::strcmp(argv[1], "write") == 0 && (argc - 4) % 3 == 0) {
    return Write(argc, argv);
  }
  return Fail("usage: joblib_format_tool index STREAM SKELETON_OUT | "
              "write SKELETON OUT [raw|object STATE DATA]...");
}
