#include "server/format/format_test_util.h"

#include <cstdio>
#include <sstream>

#include "gtest/gtest.h"

namespace persistd {
namespace testing_util {

std::string ReadTestdata(const std::string& name) {
  // Tests run in the runfiles tree of the workspace.
  const std::string path = "server/format/testdata/" + name;
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr) << "cannot open " << path;
  if (f == nullptr) return out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

ExpectedIndex ReadExpectedIndex(const std::string& name) {
  ExpectedIndex index;
  std::istringstream lines(ReadTestdata(name + ".idx"));
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    std::string kind;
    if (!(in >> kind)) continue;
    if (kind == "end") {
      in >> index.end_offset;
      continue;
    }
    LoadArrayLocation location;
    int padded = 0;
    in >> location.offset >> location.length >> padded;
    location.padded = padded != 0;
    location.kind = kind == "raw"      ? LoadArrayLocation::Kind::kRaw
                    : kind == "object" ? LoadArrayLocation::Kind::kObjectStream
                                       : LoadArrayLocation::Kind::kLegacy;
    // Optional: "<dtype or -> <itemsize> <d0,d1,... or ()> <C|F>".
    std::string dtype, shape, order;
    if (in >> dtype >> location.itemsize >> shape >> order) {
      index.has_meta = true;
      location.dtype = dtype == "-" ? "" : dtype;
      if (shape != "()") {
        std::istringstream dims(shape);
        std::string dim;
        while (std::getline(dims, dim, ',')) {
          location.shape.push_back(std::stoull(dim));
        }
      }
      location.fortran_order = order == "F";
    }
    index.arrays.push_back(location);
  }
  return index;
}

absl::Status ScanAll(absl::string_view pickle, std::vector<PickleOp>* ops) {
  PickleScanner scanner(pickle);
  while (!scanner.AtEnd()) {
    PickleOp op;
    absl::Status status = scanner.Next(&op);
    if (!status.ok()) return status;
    ops->push_back(op);
  }
  return absl::OkStatus();
}

size_t CountOccurrences(absl::string_view haystack, absl::string_view needle) {
  size_t count = 0;
  for (size_t pos = haystack.find(needle); pos != absl::string_view::npos;
       pos = haystack.find(needle, pos + needle.size())) {
    ++count;
  }
  return count;
}

}  // namespace testing_util
}  // namespace persistd
