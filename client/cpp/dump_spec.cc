#include "client/cpp/dump_spec.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace persistd {

namespace {

// Python's compression.METHODS, in the same order (persistd's spec).
struct Method {
  absl::string_view name;
  v1::Codec codec;
};
constexpr Method kMethods[] = {
    {"zlib", v1::CODEC_ZLIB}, {"gzip", v1::CODEC_GZIP}, {"bz2", v1::CODEC_BZ2},
    {"lzma", v1::CODEC_LZMA}, {"xz", v1::CODEC_XZ},     {"lz4", v1::CODEC_LZ4},
    {"zstd", v1::CODEC_ZSTD},
};

}  // namespace

absl::StatusOr<CodecChoice> ParseCompression(absl::string_view method, int level) {
  if (level < -1 || level > 9) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compression level ", level, " is out of range: use 1 (fastest) to 9 "
        "(smallest), 0 for no compression, or -1 for the method's default"));
  }
  CodecChoice choice;
  if (method.empty() || method == "none" || level == 0) {
    return choice;
  }
  for (const Method& m : kMethods) {
    if (method == m.name) {
      choice.codec = m.codec;
      choice.level = level;
      return choice;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown compression method \"", method,
      "\": use one of \"zlib\", \"gzip\", \"bz2\", \"lzma\", \"xz\", \"lz4\", "
      "\"zstd\", or \"none\""));
}

absl::StatusOr<uint64_t> NumericItemSize(absl::string_view dtype) {
  auto refuse = [dtype](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dtype '", dtype, "' ", why, ": the C++ client writes numeric numpy "
        "dtypes, a byte order and a kind and size like '<f8', '|b1', '>i4', '<c16'"));
  };
  uint64_t itemsize = 0;
  if (dtype.size() < 3 || !absl::SimpleAtoi(dtype.substr(2), &itemsize)) {
    return refuse("is not a dtype string");
  }
  const char order = dtype[0];
  const char kind = dtype[1];
  bool valid_size = false;
  switch (kind) {
    case 'b': valid_size = itemsize == 1; break;
    case 'i': case 'u':
      valid_size = itemsize == 1 || itemsize == 2 || itemsize == 4 || itemsize == 8;
      break;
    case 'f':
      valid_size = itemsize == 2 || itemsize == 4 || itemsize == 8 || itemsize == 16;
      break;
    case 'c': valid_size = itemsize == 8 || itemsize == 16 || itemsize == 32; break;
    default: return refuse("is not of a numeric kind (b, i, u, f, c)");
  }
  if (!valid_size) return refuse("has an item size numpy does not have for its kind");
  // numpy spells one-byte types with '|' and the others with '<' or '>'.
  if ((itemsize == 1) != (order == '|') || (order != '|' && order != '<' && order != '>')) {
    return refuse("has the wrong byte order character for its size");
  }
  return itemsize;
}

absl::StatusOr<uint64_t> ByteSize(const std::vector<uint64_t>& shape,
                                  uint64_t itemsize) {
  uint64_t bytes = itemsize;
  for (uint64_t d : shape) {
    if (d != 0 && bytes > UINT64_MAX / d) {
      return absl::InvalidArgumentError(absl::StrCat(
          "an array of shape (", absl::StrJoin(shape, ", "), ") and item size ",
          itemsize, " has more bytes than 64 bits count"));
    }
    bytes *= d;
  }
  return bytes;
}

absl::string_view CppTypeOf(absl::string_view dtype) {
  struct Name {
    absl::string_view dtype, type;
  };
  static constexpr Name kNames[] = {
      {"|b1", "bool"},     {"|i1", "int8_t"},   {"|u1", "uint8_t"},
      {"<i2", "int16_t"},  {"<u2", "uint16_t"}, {"<i4", "int32_t"},
      {"<u4", "uint32_t"}, {"<i8", "int64_t"},  {"<u8", "uint64_t"},
      {"<f4", "float"},    {"<f8", "double"},   {"<c8", "std::complex<float>"},
      {"<c16", "std::complex<double>"},
  };
  for (const Name& n : kNames) {
    if (n.dtype == dtype) return n.type;
  }
  return "";
}

}  // namespace persistd
