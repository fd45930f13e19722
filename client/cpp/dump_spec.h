// Checks of what a caller asks Dump to write, before anything is created:
// the compression spec (as Python's persistd.dump takes it) and numpy
// dtype strings the C++ client can describe in a joblib file.
#ifndef PERSISTD_CLIENT_CPP_DUMP_SPEC_H_
#define PERSISTD_CLIENT_CPP_DUMP_SPEC_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/persistd.pb.h"

namespace persistd {

struct CodecChoice {
  v1::Codec codec = v1::CODEC_NONE;
  int level = -1;  // -1: the codec's joblib default
};

// Maps a persistd::Compression ("lz4", {"zlib", 3}, "none", ...) to the
// daemon's codec and level. InvalidArgument, naming the valid choices, for
// anything else.
absl::StatusOr<CodecChoice> ParseCompression(absl::string_view method, int level);

// The item size of a numeric numpy dtype string: a byte order ('<', '>',
// or '|' for one-byte types), a kind (b, i, u, f, c) and a size numpy
// has for that kind ("<f8", "|b1", ">i2", "<c16", "<f2"). Only these are
// written, because only their pickled dtype state is fixed (see
// WrapperStatePickle).
absl::StatusOr<uint64_t> NumericItemSize(absl::string_view dtype);

// prod(shape) * itemsize, or InvalidArgument if it overflows 64 bits.
absl::StatusOr<uint64_t> ByteSize(const std::vector<uint64_t>& shape,
                                  uint64_t itemsize);

// The C++ type that views a dtype ("double" for "<f8"), or "" if none.
absl::string_view CppTypeOf(absl::string_view dtype);

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_DUMP_SPEC_H_
