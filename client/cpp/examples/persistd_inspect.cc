// persistd-inspect: lists the arrays of joblib files through the persistd
// daemon, with a CRC-32 of each array's bytes. An example of the C++
// client library (include/persistd/client.h) and a handy check that two
// files, or a file and a Python array, hold the same data:
//
//   $ persistd-inspect model.pkl
//   $ python -c 'import zlib, joblib; a = joblib.load("model.pkl")["w"];
//                print("%08x" % zlib.crc32(a.tobytes(order="A")))'
//
//   persistd-inspect [--socket PATH] [--tsv] FILE...
//
// The CRC is zlib's crc32 of the bytes in storage order (numpy's
// tobytes(order="A") for C- or Fortran-ordered arrays); for an object
// array, of its nested pickle. --tsv prints tab-separated lines for
// scripts: path, name, dtype, shape, order, bytes, crc32.
#include <stdio.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "persistd/client.h"

namespace {

using persistd::ArrayInfo;

// numpy's repr of a shape: (), (3,), (2, 3).
std::string ShapeText(const std::vector<uint64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

std::string Crc32(absl::string_view bytes) {
  // crc32_z takes a size_t length, so arrays over 4 GiB need no chunking.
  uLong crc = crc32_z(0L, Z_NULL, 0);
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size());
  return absl::StrFormat("%08x", crc);
}

struct Row {
  std::string index, path, dtype, shape, order, bytes, crc;
};

// Prints `rows` in columns as wide as their widest cell.
void PrintAligned(const std::vector<Row>& rows) {
  size_t w[6] = {0, 0, 0, 0, 0, 0};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.index.size());
    w[1] = std::max(w[1], r.path.size());
    w[2] = std::max(w[2], r.dtype.size());
    w[3] = std::max(w[3], r.shape.size());
    w[4] = std::max(w[4], r.order.size());
    w[5] = std::max(w[5], r.bytes.size());
  }
  for (const Row& r : rows) {
    printf("%-*s  %-*s  %-*s  %-*s  %-*s  %*s  %s\n", static_cast<int>(w[0]),
           r.index.c_str(), static_cast<int>(w[1]), r.path.c_str(),
           static_cast<int>(w[2]), r.dtype.c_str(), static_cast<int>(w[3]),
           r.shape.c_str(), static_cast<int>(w[4]), r.order.c_str(),
           static_cast<int>(w[5]), r.bytes.c_str(), r.crc.c_str());
  }
}

int Inspect(persistd::Client& client, const std::string& path, bool tsv) {
  absl::StatusOr<std::unique_ptr<persistd::File>> file = client.Load(path);
  if (!file.ok()) {
    fprintf(stderr, "persistd-inspect: %s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  const std::vector<ArrayInfo>& arrays = (*file)->arrays();
  std::vector<Row> rows;
  if (!tsv) {
    printf("%s: %zu array%s%s\n", path.c_str(), arrays.size(),
           arrays.size() == 1 ? "" : "s",
           (*file)->cache_hit() ? " (served from the daemon's cache)" : "");
    rows.push_back({"#", "path", "dtype", "shape", "order", "bytes", "crc32"});
  }
  for (size_t i = 0; i < arrays.size(); ++i) {
    const ArrayInfo& a = arrays[i];
    absl::StatusOr<absl::string_view> bytes = (*file)->Bytes(i);
    Row row;
    row.index = absl::StrCat(i);
    row.path = a.path.empty() ? "(the value)" : a.path;
    row.dtype = a.dtype.empty() ? "?" : a.dtype;
    row.shape = a.kind == ArrayInfo::Kind::kLegacy ? "?" : ShapeText(a.shape);
    row.order = a.order == persistd::Order::kFortran ? "F" : "C";
    row.bytes = absl::StrCat(a.nbytes);
    row.crc = bytes.ok() ? Crc32(*bytes) : "-";
    if (tsv) {
      printf("%s\n", absl::StrJoin({a.path, a.name, row.dtype, row.shape, row.order,
                                    row.bytes, row.crc},
                                   "\t")
                         .c_str());
    } else {
      rows.push_back(std::move(row));
    }
  }
  if (!tsv) PrintAligned(rows);
  return 0;
}

int Usage() {
  fprintf(stderr, "usage: persistd-inspect [--socket PATH] [--tsv] FILE...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket;
  bool tsv = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else if (arg == "--tsv") {
      tsv = true;
    } else if (!arg.empty() && arg[0] == '-') {
      return Usage();
    } else {
      files.push_back(arg);
    }
  }
  if (files.empty()) return Usage();
  absl::StatusOr<std::unique_ptr<persistd::Client>> client =
      persistd::Client::Connect(socket);
  if (!client.ok()) {
    fprintf(stderr, "persistd-inspect: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  int rc = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (i > 0 && !tsv) printf("\n");
    rc = std::max(rc, Inspect(**client, files[i], tsv));
  }
  return rc;
}
