#include "server/fuzz/fuzz_seeds.h"

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/codec/codec.h"
#include "server/format/joblib_writer.h"
#include "server/format/scanner_vectors.h"
#include "server/format/string_literal.h"
#include "server/fuzz/fuzz_util.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace fuzz {
namespace {

using testing_util::L;

struct WriterVector {
  int protocol;
  absl::string_view skeleton;
  std::vector<DumpArraySpec> arrays;
};

#include "server/format/testdata/writer_vectors.inc"

const WriterVector* const kWriterVectors[] = {
    &kVectorP0, &kVectorP1, &kVectorP2, &kVectorP3, &kVectorP4, &kVectorP5};

constexpr Codec kDecoders[] = {Codec::kZlib, Codec::kGzip, Codec::kBz2,
                               Codec::kLzma, Codec::kXz,   Codec::kLz4,
                               Codec::kZstd};

// The joblib streams the writer makes of the writer vectors: what
// joblib.dump writes for make_value() at protocols 0 to 5.
std::vector<std::string> JoblibStreams() {
  std::vector<std::string> streams;
  for (const WriterVector* vector : kWriterVectors) {
    StringSink sink;
    absl::StatusOr<uint64_t> written =
        WriteJoblibStream(vector->skeleton, vector->arrays, &sink);
    FUZZ_CHECK(written.ok(), written.status());
    streams.push_back(sink.data());
  }
  return streams;
}

std::vector<std::string> PickleSeeds() {
  std::vector<std::string> seeds = JoblibStreams();
  for (const testing_util::ScannerVector& vector :
       testing_util::kScannerVectors) {
    seeds.emplace_back(vector.data);
  }
  return seeds;
}

std::vector<std::string> WriterSeeds() {
  std::vector<std::string> seeds;
  for (const WriterVector* vector : kWriterVectors) {
    std::vector<std::string> sections = {std::string(vector->skeleton)};
    for (const DumpArraySpec& spec : vector->arrays) {
      const char kind =
          spec.kind == DumpArraySpec::Kind::kObjectStream ? '\1' : '\0';
      sections.push_back(
          absl::StrCat(absl::string_view(&kind, 1), spec.state_pickle));
      sections.emplace_back(spec.data);
    }
    seeds.push_back(JoinSections(sections));
  }
  return seeds;
}

std::string Encode(Codec codec, int level, int threads,
                   absl::string_view payload) {
  StringSink sink;
  absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
      NewEncoder(codec, level, threads, &sink);
  FUZZ_CHECK(encoder.ok(), encoder.status());
  absl::Status status = (*encoder)->Append(payload);
  if (status.ok()) status = (*encoder)->Finish();
  FUZZ_CHECK(status.ok(), status);
  return sink.data();
}

// Deterministic bytes that barely compress.
std::string RandomBytes(size_t size) {
  std::string out(size, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

std::string CodecSeed(size_t codec_index, uint8_t chunk_seed,
                      absl::string_view stream) {
  std::string seed;
  seed.push_back(static_cast<char>(codec_index));
  seed.push_back(static_cast<char>(chunk_seed));
  seed.append(stream.data(), stream.size());
  return seed;
}

std::vector<std::string> CodecSeeds() {
  std::string text;
  for (int i = 0; text.size() < 3000; ++i) {
    absl::StrAppend(&text, "row ", i, ": the quick brown fox\n");
  }
  // Decodes to more than one 1 MiB output chunk, from a few KB.
  std::string big(size_t{5} << 18, '\0');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i);
  const std::vector<std::string> joblib = JoblibStreams();
  const std::string payloads[] = {
      "", "persistd", text, RandomBytes(2048), joblib[0], joblib[4]};

  std::vector<std::string> seeds;
  uint8_t chunk_seed = 0;
  for (size_t c = 0; c < sizeof(kDecoders) / sizeof(kDecoders[0]); ++c) {
    const Codec codec = kDecoders[c];
    for (const std::string& payload : payloads) {
      seeds.push_back(
          CodecSeed(c, chunk_seed++, Encode(codec, -1, 1, payload)));
    }
    // The fastest level, and the parallel encoders' multi-block layouts.
    const int fastest = codec == Codec::kLzma || codec == Codec::kXz ? 0 : 1;
    seeds.push_back(
        CodecSeed(c, chunk_seed++, Encode(codec, fastest, 1, text)));
    seeds.push_back(CodecSeed(c, chunk_seed++, Encode(codec, -1, 1, big)));
    seeds.push_back(CodecSeed(c, chunk_seed++, Encode(codec, -1, 2, big)));
    // Two streams back to back (bz2, lzma, xz and lz4 continue into the
    // second), then bytes that are no stream.
    seeds.push_back(
        CodecSeed(c, chunk_seed++,
                  absl::StrCat(Encode(codec, -1, 1, "first"),
                               Encode(codec, -1, 1, "second"), "trailing")));
  }
  return seeds;
}

}  // namespace

std::vector<std::string> SeedsFor(absl::string_view target) {
  if (target == "codec") return CodecSeeds();
  if (target == "pickle" || target == "joblib_reader") return PickleSeeds();
  if (target == "joblib_writer") return WriterSeeds();
  return {};
}

}  // namespace fuzz
}  // namespace persistd
