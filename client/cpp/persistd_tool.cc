// persistd_tool: writes the fixed file the cross-language tests check
// (tests/python/test_cpp_client.py) through the C++ client's public API.
// Inspecting files is persistd-inspect's job (examples/).
//
//   persistd_tool [--socket PATH] demo-dump FILE [METHOD [LEVEL]]
//       writes {'ints': arange(10) int64, 'matrix': 3x4 float64 i/2,
//       'small': float32 [1.5, -2.5]} as a joblib file; METHOD is "none"
//       (the default) or a compression method, as in Python's compress=.
#include <stdio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "persistd/client.h"

namespace {

int Usage() {
  fprintf(stderr,
          "usage: persistd_tool [--socket PATH] demo-dump FILE [METHOD [LEVEL]]\n");
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
  if (args.size() < 2 || args.size() > 4 || args[0] != "demo-dump") return Usage();
  persistd::Compression compress;
  if (args.size() > 2) compress.method = args[2];
  if (args.size() > 3 && !absl::SimpleAtoi(args[3], &compress.level)) return Usage();

  absl::StatusOr<std::unique_ptr<persistd::Client>> client =
      persistd::Client::Connect(socket);
  if (!client.ok()) {
    fprintf(stderr, "persistd_tool: %s\n", client.status().ToString().c_str());
    return 1;
  }
  std::vector<int64_t> ints(10);
  for (int i = 0; i < 10; ++i) ints[i] = i;
  std::vector<double> matrix(12);
  for (int i = 0; i < 12; ++i) matrix[i] = i / 2.0;
  std::vector<float> small = {1.5f, -2.5f};
  absl::Status status = (*client)->Dump(
      args[1],
      {{"ints", ints},
       {"matrix", persistd::ArrayRef(matrix.data(), {3, 4})},
       {"small", small}},
      compress);
  if (!status.ok()) {
    fprintf(stderr, "persistd_tool: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
