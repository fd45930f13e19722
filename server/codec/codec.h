// The compression layer: the streams joblib writes and reads (zlib, gzip,
// bz2, lzma, xz, lz4) plus zstd, behind one ByteSink-based interface.
//
// Every encoder writes the stream format joblib writes for the same codec
// and level (header bytes included), so joblib loads our files; Decode reads
// what joblib and the Python compression modules write. Exact compressed
// bytes may differ from Python's where the library versions differ, and do
// for zlib/gzip levels 1-3, which are compressed mostly by ISA-L (several
// times zlib's speed, see zlib_codec.cc); the decompressed bytes never do.
// With threads > 1 the zlib, gzip, xz, lz4 and zstd encoders compress in
// parallel and still emit one standard stream (see NewEncoder).
//
// All functions here are thread-safe. An encoder (the returned ByteSink) is
// not: one writer uses it at a time.
#ifndef PERSISTD_SERVER_CODEC_CODEC_H_
#define PERSISTD_SERVER_CODEC_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/io/byte_sink.h"

namespace persistd {

// Values equal the proto enum persistd.v1.Codec (0..7).
enum class Codec {
  kNone = 0,
  kZlib = 1,
  kGzip = 2,
  kBz2 = 3,
  kLzma = 4,
  kXz = 5,
  kLz4 = 6,
  kZstd = 7,
};

// "none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd" (joblib's
// method names); "unknown" for a value outside the enum.
absl::string_view CodecName(Codec codec);

// Detects a compressed stream by its magic bytes only (never by file name),
// in joblib's order: zlib 78, gzip 1f 8b, bz2 "BZ", lzma-alone 5d 00,
// xz fd 37 7a 58 5a, lz4 04 22 4d 18, then zstd 28 b5 2f fd. Returns kNone
// otherwise, including for a prefix too short to hold a magic (5 bytes are
// enough for every codec). The caller checks joblib's legacy "ZF" prefix
// itself, before calling this.
Codec DetectCodec(absl::string_view prefix);

// joblib's default level per codec: zlib/gzip 3, bz2 9, lzma/xz preset 6,
// lz4 0 (fast), zstd 3; 0 for kNone.
int DefaultLevel(Codec codec);

// OK when `level` is -1 (the default) or a level the codec accepts:
// zlib/gzip/bz2 1..9, lzma/xz 0..9, lz4 0..16 (levels above 12 act as 12),
// zstd 1..22 or the fast levels -131072..-2. Any level is OK for kNone.
// Otherwise InvalidArgument naming the codec, the level and the valid range.
absl::Status ValidateLevel(Codec codec, int level);

// Returns a ByteSink that compresses what is appended and writes the
// compressed bytes to `out` in chunks of about 1 MiB. Its Finish() writes the
// trailer and then calls out->Finish(). Destroying it without Finish() leaves
// a truncated stream in `out` and frees everything.
//
// `level` -1 means DefaultLevel(codec). `threads` <= 1 compresses on the
// calling thread; more than 64 act as 64. zlib and gzip at levels 1-3 are
// always written as blocks of 1 MiB (each primed with the previous 32 KiB,
// ended by a sync flush), each deflated by ISA-L or zlib, whichever a
// sample says suits it; the bytes do not depend on `threads`. With
// threads > 1:
//   zlib, gzip: those blocks (at every level) are deflated in parallel
//     (pigz-style), one stream;
//   lz4: 1 MiB runs of independent 64 KiB blocks in parallel, one frame
//     (FLG 0x60 instead of python-lz4's 0x40; python-lz4 reads both);
//   xz: liblzma's multi-threaded encoder (several blocks), one stream;
//   zstd: libzstd's workers, one frame (single-threaded if the library was
//     built without them);
//   bz2, lzma: ignored (the formats have no parallel encoder).
// Every stream above is what a single-threaded decoder (joblib) reads.
//
// InvalidArgument for an unknown codec or a level ValidateLevel rejects.
// Errors of `out` are returned by Append/Finish; after an error the encoder
// is unusable. REQUIRES: `out` outlives the encoder.
//
// `interrupted` (optional) is asked, at most every 50 ms, while an encoder
// waits on its own workers: xz with threads > 1 blocks an Append until a
// worker finishes a block (up to 24 MiB, seconds of work). When it returns
// true, that Append returns Cancelled and the workers stop. Every other
// encoder returns to its caller within a chunk, where the caller checks.
using Interrupted = std::function<bool()>;
absl::StatusOr<std::unique_ptr<ByteSink>> NewEncoder(
    Codec codec, int level, int threads, ByteSink* out,
    Interrupted interrupted = nullptr);

// Decodes ONE compressed stream at the start of `input` into `out`, in
// chunks of about 1 MiB, and does not call out->Finish(). On success
// *consumed (when not null) is the number of bytes of `input` the stream
// occupies; bytes after it are left alone (joblib issue #1161: joblib loops
// forever on trailing data).
//
// Truncated or corrupt input gives DataLoss with a message naming the codec
// and the problem, e.g. "lz4 stream is truncated (file ends before the end
// mark)". Errors of `out` are returned as they are; a sink can stop a
// decompression bomb by failing. InvalidArgument for an unknown codec.
//
// kNone copies all of `input`.
absl::Status Decode(Codec codec, absl::string_view input, ByteSink* out,
                    size_t* consumed);

// Decodes what joblib's readers decode: Decode, and then for bz2, lzma, xz
// and lz4 (whose Python readers continue into concatenated streams, as
// pbzip2 or `cat a.xz b.xz` produce) every further stream that follows
// back to back, while the rest of `input` starts with the codec's magic.
// Anything else after the streams is left alone and excluded from
// *consumed. zlib, gzip, zstd and kNone: the same as Decode.
absl::Status DecodeAll(Codec codec, absl::string_view input, ByteSink* out,
                       size_t* consumed);

// Decodes ONE compressed stream whose bytes arrive in pieces (a file read
// chunk by chunk), so the compressed input never has to be in memory at
// once. Decode is a single Feed of all the input.
//
// Not thread-safe; one caller feeds it.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;

  // Decodes `input`, the next bytes of the stream, appending the output to
  // `out` in chunks of about 1 MiB (output may be held back until a chunk
  // is full or the stream ends; nothing is held back once *done is true).
  // When the stream ends inside `input`, *done is true and *used is the
  // number of bytes of `input` up to its end (the rest is not part of it);
  // otherwise *done is false and *used is input.size(): feed more. An empty
  // `input` is allowed. Errors are Decode's (offsets count from the first
  // byte ever fed); after an error, or after *done, Feed fails
  // (FailedPrecondition after the end). *used and *done are untouched on
  // error.
  virtual absl::Status Feed(absl::string_view input, ByteSink* out,
                            size_t* used, bool* done) = 0;
};

// A decoder for one stream of `codec`. InvalidArgument for an unknown codec
// or kNone (uncompressed input needs no decoder).
absl::StatusOr<std::unique_ptr<StreamDecoder>> NewStreamDecoder(Codec codec);

// Where DecodeAllFrom reads compressed bytes from.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // The next bytes of the input, valid until the next call; empty at its
  // end.
  virtual absl::StatusOr<absl::string_view> Read() = 0;
};

// DecodeAll for input read piece by piece from `in`: decodes the first
// stream and, for bz2, lzma, xz and lz4, every further stream that follows
// back to back -- as long as `another` (when given), asked after each
// stream, returns true. *consumed receives the number of input bytes the
// decoded streams occupy; bytes after them are read at most partly (a
// piece) and not decoded. kNone copies the whole input to `out`. A source
// that ends inside a stream gives Decode's truncation error; errors of `in`
// and `out` are returned as they are.
absl::Status DecodeAllFrom(Codec codec, ByteSource* in, ByteSink* out,
                           uint64_t* consumed,
                           const std::function<bool()>& another = nullptr);

}  // namespace persistd

#endif  // PERSISTD_SERVER_CODEC_CODEC_H_
