// persistd_tool: a small command-line face of the C++ client, used by the
// cross-language tests and handy for inspecting files.
//
//   persistd_tool [--socket PATH] inspect FILE
//       one line per array: index, name, dtype, shape, sum of elements
//       (numeric dtypes)
//   persistd_tool [--socket PATH] demo-dump FILE [none|zlib|gzip|bz2|lzma|xz|lz4|zstd]
//       writes {'ints': arange(10) int64, 'matrix': 3x4 float64 i/2,
//       'small': float32 [1.5, -2.5]} as a joblib file
#include <stdio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "client/cpp/persistd_client.h"

namespace {

using persistd::ArrayInfo;

template <typename T>
double Sum(const ArrayInfo& info) {
  const T* p = reinterpret_cast<const T*>(info.data);
  double s = 0;
  for (uint64_t i = 0; i < info.nbytes / sizeof(T); ++i) s += static_cast<double>(p[i]);
  return s;
}

std::string SumOf(const ArrayInfo& info) {
  const std::string& d = info.dtype;
  double s;
  if (d == "<f8") s = Sum<double>(info);
  else if (d == "<f4") s = Sum<float>(info);
  else if (d == "<i8") s = Sum<int64_t>(info);
  else if (d == "<i4") s = Sum<int32_t>(info);
  else if (d == "|u1") s = Sum<uint8_t>(info);
  else return "-";
  char buf[64];
  snprintf(buf, sizeof(buf), "%.6g", s);
  return buf;
}

int Usage() {
  fprintf(stderr,
          "usage: persistd_tool [--socket PATH] inspect FILE\n"
          "       persistd_tool [--socket PATH] demo-dump FILE [CODEC]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string socket;
  if (args.size() >= 2 && args[0] == "--socket") {
    socket = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.size() < 2) return Usage();
  auto client = persistd::Client::Connect(socket);
  if (!client.ok()) {
    fprintf(stderr, "persistd_tool: %s\n", client.status().ToString().c_str());
    return 1;
  }
  if (args[0] == "inspect") {
    auto file = (*client)->Load(args[1]);
    if (!file.ok()) {
      fprintf(stderr, "persistd_tool: %s\n", file.status().ToString().c_str());
      return 1;
    }
    const auto& arrays = (*file)->arrays();
    for (size_t i = 0; i < arrays.size(); ++i) {
      const ArrayInfo& a = arrays[i];
      printf("%zu\t%s\t%s\t(%s)\t%s\n", i, a.name.c_str(), a.dtype.c_str(),
             absl::StrJoin(a.shape, ",").c_str(), SumOf(a).c_str());
    }
    return 0;
  }
  if (args[0] == "demo-dump") {
    std::vector<int64_t> ints(10);
    for (int i = 0; i < 10; ++i) ints[i] = i;
    std::vector<double> matrix(12);
    for (int i = 0; i < 12; ++i) matrix[i] = i / 2.0;
    std::vector<float> small = {1.5f, -2.5f};
    auto bytes = [](const auto& v) {
      return absl::string_view(reinterpret_cast<const char*>(v.data()),
                               v.size() * sizeof(v[0]));
    };
    persistd::v1::Codec codec = persistd::v1::CODEC_NONE;
    if (args.size() > 2 && !persistd::v1::Codec_Parse(
                               "CODEC_" + absl::AsciiStrToUpper(args[2]), &codec)) {
      fprintf(stderr, "persistd_tool: unknown codec '%s'\n", args[2].c_str());
      return 2;
    }
    absl::Status status = (*client)->DumpArrays(
        args[1],
        {{"ints", persistd::NumpyDtype<int64_t>(), {10}, bytes(ints)},
         {"matrix", persistd::NumpyDtype<double>(), {3, 4}, bytes(matrix)},
         {"small", persistd::NumpyDtype<float>(), {2}, bytes(small)}},
        codec);
    if (!status.ok()) {
      fprintf(stderr, "persistd_tool: %s\n", status.ToString().c_str());
      return 1;
    }
    return 0;
  }
  return Usage();
}
