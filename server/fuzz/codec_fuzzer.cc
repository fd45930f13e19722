// Fuzzes every decoder of server/codec with arbitrary bytes.
//
// Input: byte 0 picks the codec (zlib, gzip, bz2, lzma, xz, lz4, zstd:
// byte % 7), byte 1 seeds the chunk sizes, the rest is the compressed
// stream. The stream is decoded four ways, which must agree:
//  1. Decode, all input at once (and again on just the bytes it consumed,
//     when it left some);
//  2. a StreamDecoder fed in random-sized chunks (empty ones included),
//     checking the Feed contract (used/done, errors repeat, FailedPrecondition
//     after the end);
//  3. DecodeAll, all input at once (bz2, lzma, xz, lz4: for the others it
//     is Decode);
//  4. DecodeAllFrom a ByteSource of random-sized pieces, each in a fresh
//     buffer freed by the next Read, so a view kept across a Read is a
//     use-after-free that ASan reports; once with every stream, once
//     stopping after the first (which must read what Decode reads).
// Output is capped at kOutputLimit by the sink, which fails beyond it, as
// the daemon's sinks stop decompression bombs; the limit is above 1 MiB so
// decoders flush a full 1 MiB chunk and go on.
//
// liblzma's memory is capped too, at kLzmaMemlimit, by wrapping the two
// decoder constructors (-Wl,--wrap in BUILD.bazel). The decoders pass no
// limit, so liblzma reserves whatever dictionary a header declares, up to
// 4 GiB for a 13-byte input, untouched until data fills it; under ASan
// freeing such a block poisons its shadow (512 MiB for 4 GiB), seconds per
// input. Streams needing more fail with LZMA_MEMLIMIT_ERROR here, an error
// the decoders report like any other.
#include <lzma.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/codec/codec.h"
#include "server/fuzz/fuzz_util.h"

namespace persistd {
namespace fuzz {
namespace {

constexpr uint64_t kOutputLimit = uint64_t{3} << 19;

// What the largest preset joblib offers (9: a 64 MiB dictionary) needs.
constexpr uint64_t kLzmaMemlimit = uint64_t{80} << 20;

}  // namespace
}  // namespace fuzz
}  // namespace persistd

extern "C" {

lzma_ret __real_lzma_alone_decoder(lzma_stream* strm, uint64_t memlimit);
lzma_ret __real_lzma_stream_decoder(lzma_stream* strm, uint64_t memlimit,
                                    uint32_t flags);

lzma_ret __wrap_lzma_alone_decoder(lzma_stream* strm, uint64_t memlimit) {
  return __real_lzma_alone_decoder(
      strm, std::min(memlimit, persistd::fuzz::kLzmaMemlimit));
}

lzma_ret __wrap_lzma_stream_decoder(lzma_stream* strm, uint64_t memlimit,
                                    uint32_t flags) {
  return __real_lzma_stream_decoder(
      strm, std::min(memlimit, persistd::fuzz::kLzmaMemlimit), flags);
}

}  // extern "C"

namespace persistd {
namespace fuzz {
namespace {

constexpr Codec kDecoders[] = {Codec::kZlib, Codec::kGzip, Codec::kBz2,
                               Codec::kLzma, Codec::kXz,   Codec::kLz4,
                               Codec::kZstd};

// The result of one way of decoding.
struct Outcome {
  absl::Status status;
  uint64_t consumed = 0;  // valid iff status.ok()
  uint64_t size = 0;      // of the output
  uint64_t digest = 0;
};

std::string Show(absl::string_view what, const Outcome& outcome) {
  return absl::StrCat(what, ": ", outcome.status.ToString(), ", consumed ",
                      outcome.consumed, ", output ", outcome.size);
}

void ExpectSame(absl::string_view what_a, const Outcome& a,
                absl::string_view what_b, const Outcome& b) {
  const std::string detail =
      absl::StrCat(Show(what_a, a), " / ", Show(what_b, b));
  FUZZ_CHECK(a.status.ok() == b.status.ok(), detail);
  if (!a.status.ok()) return;
  FUZZ_CHECK(a.consumed == b.consumed, detail);
  FUZZ_CHECK(a.size == b.size && a.digest == b.digest, detail);
}

Outcome OneShot(Codec codec, absl::string_view stream, bool all) {
  Outcome outcome;
  DigestSink sink(kOutputLimit);
  size_t consumed = 0;
  outcome.status = all ? DecodeAll(codec, stream, &sink, &consumed)
                       : Decode(codec, stream, &sink, &consumed);
  if (outcome.status.ok()) {
    FUZZ_CHECK(consumed <= stream.size());
    outcome.consumed = consumed;
  }
  FUZZ_CHECK(!sink.finished(), "a decoder called Finish on its sink");
  outcome.size = sink.size();
  outcome.digest = sink.digest();
  return outcome;
}

Outcome Streamed(Codec codec, absl::string_view stream, uint8_t seed) {
  absl::StatusOr<std::unique_ptr<StreamDecoder>> made = NewStreamDecoder(codec);
  FUZZ_CHECK(made.ok(), made.status());
  StreamDecoder& decoder = **made;
  DigestSink sink(kOutputLimit);
  ChunkSizes sizes(seed);
  Outcome outcome;
  size_t pos = 0;
  bool done = false;
  while (true) {
    const size_t n = sizes.Next(stream.size() - pos);
    const absl::string_view chunk = stream.substr(pos, n);
    size_t used = 12345;
    done = false;
    absl::Status status = decoder.Feed(chunk, &sink, &used, &done);
    if (!status.ok()) {
      FUZZ_CHECK(used == 12345 && !done, "Feed set *used/*done on error");
      // Every later Feed returns the same error.
      absl::Status again = decoder.Feed("x", &sink, &used, &done);
      FUZZ_CHECK(again == status,
                 absl::StrCat(status.ToString(), " then ", again.ToString()));
      outcome.status = status;
      break;
    }
    if (done) {
      FUZZ_CHECK(used <= chunk.size());
      pos += used;
      absl::Status after = decoder.Feed("", &sink, &used, &done);
      FUZZ_CHECK(absl::IsFailedPrecondition(after), after);
      outcome.consumed = pos;
      break;
    }
    FUZZ_CHECK(used == chunk.size(),
               absl::StrCat("used ", used, " of ", chunk.size(), " not done"));
    pos += used;
    if (pos == stream.size() && n == 0) {
      // All input is fed (the empty Feed confirms nothing is pending): a
      // stream that wants more is truncated, as Decode reports.
      outcome.status = absl::DataLossError("truncated");
      break;
    }
  }
  FUZZ_CHECK(!sink.finished(), "a decoder called Finish on its sink");
  outcome.size = sink.size();
  outcome.digest = sink.digest();
  return outcome;
}

// Hands out the input in random-sized pieces, each in its own heap buffer
// that the next Read frees.
class PieceSource : public ByteSource {
 public:
  PieceSource(absl::string_view input, uint8_t seed)
      : input_(input), sizes_(seed ^ 0x5a) {}

  absl::StatusOr<absl::string_view> Read() override {
    const size_t n = sizes_.NextNonEmpty(input_.size() - pos_);
    piece_.reset(new char[n == 0 ? 1 : n]);
    if (n > 0) std::memcpy(piece_.get(), input_.data() + pos_, n);
    pos_ += n;
    return absl::string_view(piece_.get(), n);
  }

 private:
  const absl::string_view input_;
  ChunkSizes sizes_;
  size_t pos_ = 0;
  std::unique_ptr<char[]> piece_;
};

Outcome FromSource(Codec codec, absl::string_view stream, uint8_t seed,
                   int max_streams) {
  PieceSource source(stream, seed);
  DigestSink sink(kOutputLimit);
  uint64_t consumed = 0;
  int streams = 0;
  Outcome outcome;
  outcome.status = DecodeAllFrom(
      codec, &source, &sink, &consumed,
      [&streams, max_streams] { return ++streams < max_streams; });
  if (outcome.status.ok()) {
    FUZZ_CHECK(consumed <= stream.size());
    outcome.consumed = consumed;
  }
  outcome.size = sink.size();
  outcome.digest = sink.digest();
  return outcome;
}

bool Concatenates(Codec codec) {
  return codec == Codec::kBz2 || codec == Codec::kLzma || codec == Codec::kXz ||
         codec == Codec::kLz4;
}

}  // namespace
}  // namespace fuzz
}  // namespace persistd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace persistd;        // NOLINT
  using namespace persistd::fuzz;  // NOLINT
  if (size < 2) return 0;
  const Codec codec = kDecoders[data[0] % 7];
  const uint8_t seed = data[1];
  const absl::string_view stream(reinterpret_cast<const char*>(data) + 2,
                                 size - 2);

  const Outcome decode = OneShot(codec, stream, /*all=*/false);
  ExpectSame("Decode", decode, "StreamDecoder", Streamed(codec, stream, seed));
  if (decode.status.ok() && decode.consumed < stream.size()) {
    // The stream occupies exactly the bytes Decode consumed.
    ExpectSame("Decode", decode, "Decode(consumed bytes only)",
               OneShot(codec, stream.substr(0, decode.consumed),
                       /*all=*/false));
  }
  if (!Concatenates(codec)) {
    // DecodeAll is Decode for these, and DecodeAllFrom asks for no second
    // stream.
    ExpectSame("Decode", decode, "DecodeAllFrom",
               FromSource(codec, stream, seed, /*max_streams=*/1 << 30));
    return 0;
  }
  const Outcome decode_all = OneShot(codec, stream, /*all=*/true);
  if (!decode.status.ok()) {
    // DecodeAll fails on the first stream as Decode does.
    FUZZ_CHECK(decode_all.status == decode.status &&
                   decode_all.size == decode.size &&
                   decode_all.digest == decode.digest,
               absl::StrCat(Show("Decode", decode), " / ",
                            Show("DecodeAll", decode_all)));
  } else {
    // The first stream decodes the same; more streams may follow.
    FUZZ_CHECK(decode_all.size >= decode.size, Show("DecodeAll", decode_all));
    if (decode_all.status.ok()) {
      FUZZ_CHECK(decode_all.consumed >= decode.consumed);
    }
  }
  ExpectSame("DecodeAll", decode_all, "DecodeAllFrom",
             FromSource(codec, stream, seed, /*max_streams=*/1 << 30));
  // Stopping after the first stream reads what Decode reads.
  ExpectSame("Decode", decode, "DecodeAllFrom(one stream)",
             FromSource(codec, stream, seed, /*max_streams=*/1));
  return 0;
}
