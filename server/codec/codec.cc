#include "server/codec/codec.h"

#include <zstd.h>

#include <algorithm>
#include <utility>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/codec/codec_internal.h"

namespace persistd {

namespace {

// A codec's magic, in joblib's detection order (zstd, not a joblib codec,
// comes last).
struct Magic {
  Codec codec;
  absl::string_view bytes;
};
constexpr Magic kMagics[] = {
    {Codec::kZlib, absl::string_view("\x78", 1)},
    {Codec::kGzip, absl::string_view("\x1f\x8b", 2)},
    {Codec::kBz2, absl::string_view("BZ", 2)},
    {Codec::kLzma, absl::string_view("\x5d\x00", 2)},
    {Codec::kXz, absl::string_view("\xfd\x37\x7a\x58\x5a", 5)},
    {Codec::kLz4, absl::string_view("\x04\x22\x4d\x18", 4)},
    {Codec::kZstd, absl::string_view("\x28\xb5\x2f\xfd", 4)},
};

// More threads than this are not useful on any machine persistd targets and
// would only multiply the per-thread buffers.
constexpr int kMaxThreads = 64;

bool IsKnown(Codec codec) {
  return static_cast<int>(codec) >= 0 &&
         static_cast<int>(codec) <= static_cast<int>(Codec::kZstd);
}

absl::Status UnknownCodec(Codec codec) {
  return absl::InvalidArgumentError(
      absl::StrCat("unknown codec ", static_cast<int>(codec),
                   "; valid codecs are 0..7 (none, zlib, gzip, bz2, lzma, "
                   "xz, lz4, zstd)"));
}

// Passes bytes through unchanged (Codec::kNone).
class PassThroughEncoder : public codec_internal::Encoder {
 public:
  using Encoder::Encoder;

 private:
  absl::Status Compress(absl::string_view data) override {
    return out()->Append(data);
  }
  absl::Status End() override { return absl::OkStatus(); }
};

}  // namespace

absl::string_view CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone:
      return "none";
    case Codec::kZlib:
      return "zlib";
    case Codec::kGzip:
      return "gzip";
    case Codec::kBz2:
      return "bz2";
    case Codec::kLzma:
      return "lzma";
    case Codec::kXz:
      return "xz";
    case Codec::kLz4:
      return "lz4";
    case Codec::kZstd:
      return "zstd";
  }
  return "unknown";
}

Codec DetectCodec(absl::string_view prefix) {
  for (const Magic& magic : kMagics) {
    if (absl::StartsWith(prefix, magic.bytes)) return magic.codec;
  }
  return Codec::kNone;
}

int DefaultLevel(Codec codec) {
  switch (codec) {
    case Codec::kZlib:
    case Codec::kGzip:
      return 3;
    case Codec::kBz2:
      return 9;
    case Codec::kLzma:
    case Codec::kXz:
      return 6;
    case Codec::kZstd:
      return 3;
    case Codec::kLz4:
    case Codec::kNone:
      return 0;
  }
  return 0;
}

absl::Status ValidateLevel(Codec codec, int level) {
  if (!IsKnown(codec)) return UnknownCodec(codec);
  if (level == -1 || codec == Codec::kNone) return absl::OkStatus();
  int low = 1;
  int high = 9;
  std::string range;
  switch (codec) {
    case Codec::kLzma:
    case Codec::kXz:
      low = 0;
      break;
    case Codec::kLz4:
      low = 0;
      high = 16;
      break;
    case Codec::kZstd:
      // zstd's own -1 (a fast level) is unreachable: -1 means the default.
      high = ZSTD_maxCLevel();
      if (level < -1 && level >= ZSTD_minCLevel()) return absl::OkStatus();
      range = absl::StrCat(" or ", ZSTD_minCLevel(), "..-2 (fast modes)");
      break;
    default:
      break;
  }
  if (level >= low && level <= high) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid ", CodecName(codec), " compression level ", level,
      "; valid levels are ", low, "..", high, range, ", or -1 for the default (",
      DefaultLevel(codec), ")"));
}

absl::StatusOr<std::unique_ptr<ByteSink>> NewEncoder(Codec codec, int level,
                                                     int threads, ByteSink* out,
                                                     Interrupted interrupted) {
  absl::Status status = ValidateLevel(codec, level);
  if (!status.ok()) return status;
  if (level == -1) level = DefaultLevel(codec);
  threads = std::clamp(threads, 1, kMaxThreads);
  switch (codec) {
    case Codec::kNone:
      return std::unique_ptr<ByteSink>(new PassThroughEncoder(out));
    case Codec::kZlib:
    case Codec::kGzip:
      return codec_internal::NewZlibEncoder(codec == Codec::kGzip, level,
                                            threads, out);
    case Codec::kBz2:
      return codec_internal::NewBz2Encoder(level, out);
    case Codec::kLzma:
    case Codec::kXz:
      return codec_internal::NewLzmaEncoder(codec == Codec::kXz, level,
                                            threads, out, std::move(interrupted));
    case Codec::kLz4:
      return codec_internal::NewLz4Encoder(level, threads, out);
    case Codec::kZstd:
      return codec_internal::NewZstdEncoder(level, threads, out);
  }
  return UnknownCodec(codec);
}

absl::StatusOr<std::unique_ptr<StreamDecoder>> NewStreamDecoder(Codec codec) {
  switch (codec) {
    case Codec::kZlib:
    case Codec::kGzip:
      return codec_internal::NewZlibDecoder(codec == Codec::kGzip);
    case Codec::kBz2:
      return codec_internal::NewBz2Decoder();
    case Codec::kLzma:
    case Codec::kXz:
      return codec_internal::NewLzmaDecoder(codec == Codec::kXz);
    case Codec::kLz4:
      return codec_internal::NewLz4Decoder();
    case Codec::kZstd:
      return codec_internal::NewZstdDecoder();
    case Codec::kNone:
      return absl::InvalidArgumentError(
          "uncompressed input (codec none) has no stream decoder");
  }
  return UnknownCodec(codec);
}

absl::Status Decode(Codec codec, absl::string_view input, ByteSink* out,
                    size_t* consumed) {
  if (codec == Codec::kNone) {
    absl::Status status = input.empty() ? absl::OkStatus() : out->Append(input);
    if (status.ok() && consumed != nullptr) *consumed = input.size();
    return status;
  }
  absl::StatusOr<std::unique_ptr<StreamDecoder>> decoder =
      NewStreamDecoder(codec);
  if (!decoder.ok()) return decoder.status();
  size_t used = 0;
  bool done = false;
  absl::Status status = (*decoder)->Feed(input, out, &used, &done);
  if (!status.ok()) return status;
  // All the input is present: a stream that wants more is truncated.
  if (!done) return codec_internal::TruncatedError(CodecName(codec));
  if (consumed != nullptr) *consumed = used;
  return absl::OkStatus();
}

namespace {

// Whether joblib's reader for `codec` continues into a stream that follows.
bool Concatenates(Codec codec) {
  return codec == Codec::kBz2 || codec == Codec::kLzma ||
         codec == Codec::kXz || codec == Codec::kLz4;
}

// Longest magic in kMagics.
constexpr size_t kMaxMagic = 5;

}  // namespace

absl::Status DecodeAll(Codec codec, absl::string_view input, ByteSink* out,
                       size_t* consumed) {
  size_t total = 0;
  absl::Status status = Decode(codec, input, out, &total);
  if (!status.ok()) return status;
  while (Concatenates(codec) && total < input.size()) {
    // Not substr(): it may throw, and the daemon has no exceptions.
    absl::string_view rest(input.data() + total, input.size() - total);
    if (DetectCodec(rest) != codec) break;
    size_t used = 0;
    status = Decode(codec, rest, out, &used);
    if (!status.ok()) return status;
    total += used;
  }
  if (consumed != nullptr) *consumed = total;
  return absl::OkStatus();
}

absl::Status DecodeAllFrom(Codec codec, ByteSource* in, ByteSink* out,
                           uint64_t* consumed,
                           const std::function<bool()>& another) {
  if (!IsKnown(codec)) return UnknownCodec(codec);
  uint64_t total = 0;  // input bytes handed to decoders (or copied)
  if (codec == Codec::kNone) {
    while (true) {
      absl::StatusOr<absl::string_view> piece = in->Read();
      if (!piece.ok()) return piece.status();
      if (piece->empty()) break;
      absl::Status status = out->Append(*piece);
      if (!status.ok()) return status;
      total += piece->size();
    }
    *consumed = total;
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<StreamDecoder>> decoder =
      NewStreamDecoder(codec);
  if (!decoder.ok()) return decoder.status();
  absl::string_view piece;  // input not yet fed
  std::string joined;       // backs `piece` when a magic straddled a read
  bool input_ended = false;
  while (true) {
    if (piece.empty() && !input_ended) {
      absl::StatusOr<absl::string_view> next = in->Read();
      if (!next.ok()) return next.status();
      piece = *next;
      input_ended = piece.empty();
    }
    size_t used = 0;
    bool done = false;
    absl::Status status = (*decoder)->Feed(piece, out, &used, &done);
    if (!status.ok()) return status;
    piece.remove_prefix(used);
    total += used;
    if (!done) {
      if (input_ended) return codec_internal::TruncatedError(CodecName(codec));
      continue;
    }
    // One stream is complete: look for another right after it.
    if (!Concatenates(codec) || (another && !another())) break;
    while (piece.size() < kMaxMagic && !input_ended) {
      std::string carry(piece);  // Read() may reuse the memory under piece
      absl::StatusOr<absl::string_view> next = in->Read();
      if (!next.ok()) return next.status();
      if (next->empty()) input_ended = true;
      joined = absl::StrCat(carry, *next);
      piece = joined;
    }
    if (piece.empty() || DetectCodec(piece) != codec) break;
    decoder = NewStreamDecoder(codec);
    if (!decoder.ok()) return decoder.status();
  }
  *consumed = total;
  return absl::OkStatus();
}

}  // namespace persistd
