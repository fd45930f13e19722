// zlib (RFC 1950) and gzip (RFC 1952) streams, as joblib's BinaryZlibFile
// and BinaryGzipFile write them: deflateInit2(level, Z_DEFLATED, 15 or 31,
// memLevel 8, Z_DEFAULT_STRATEGY).
#include <zlib.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/codec/codec_internal.h"
#include "server/codec/parallel_encoder.h"

namespace persistd {
namespace codec_internal {
namespace {

constexpr int kMemLevel = 8;
constexpr int kZlibWindowBits = 15;
constexpr int kGzipWindowBits = 31;  // 15 + 16: gzip wrapper
constexpr int kRawWindowBits = -15;  // no wrapper (parallel blocks)
constexpr size_t kWindowSize = size_t{1} << 15;
constexpr size_t kParallelBlockSize = size_t{1} << 20;

absl::string_view Name(bool gzip) { return gzip ? "gzip" : "zlib"; }

absl::Status ZlibError(bool gzip, absl::string_view what, int rc,
                       const z_stream& stream) {
  std::string message =
      absl::StrCat(Name(gzip), " ", what, " failed (", rc, ")",
                   stream.msg != nullptr ? ": " : "",
                   stream.msg != nullptr ? stream.msg : "");
  if (rc == Z_MEM_ERROR) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

// Compresses on the calling thread.
//
// Invariant: stream_ is an initialized deflate stream from construction
// (Create) to destruction.
class ZlibEncoder : public Encoder {
 public:
  static absl::StatusOr<std::unique_ptr<ByteSink>> Create(bool gzip,
                                                          int level,
                                                          ByteSink* out) {
    std::unique_ptr<ZlibEncoder> encoder(new ZlibEncoder(gzip, out));
    int rc = deflateInit2(&encoder->stream_, level, Z_DEFLATED,
                          gzip ? kGzipWindowBits : kZlibWindowBits, kMemLevel,
                          Z_DEFAULT_STRATEGY);
    if (rc != Z_OK) {
      // deflateEnd on a stream whose init failed is a harmless no-op.
      return ZlibError(gzip, "deflateInit2", rc, encoder->stream_);
    }
    return std::unique_ptr<ByteSink>(std::move(encoder));
  }

  ~ZlibEncoder() override { deflateEnd(&stream_); }

 private:
  ZlibEncoder(bool gzip, ByteSink* out) : Encoder(out), gzip_(gzip) {}

  absl::Status Compress(absl::string_view data) override {
    while (!data.empty()) {
      size_t n = std::min(data.size(), kMaxLibraryInput);
      stream_.next_in =
          reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
      stream_.avail_in = static_cast<uInt>(n);
      data.remove_prefix(n);
      absl::Status status = Deflate(Z_NO_FLUSH);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  absl::Status End() override {
    absl::Status status = Deflate(Z_FINISH);
    if (!status.ok()) return status;
    return buffer_.FlushTo(out());
  }

  // Runs deflate until the input is used up (Z_NO_FLUSH) or the stream is
  // ended (Z_FINISH).
  absl::Status Deflate(int flush) {
    while (true) {
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out());
        if (!status.ok()) return status;
      }
      size_t room = buffer_.free_size();
      stream_.next_out = reinterpret_cast<Bytef*>(buffer_.free_data());
      stream_.avail_out = static_cast<uInt>(room);
      int rc = deflate(&stream_, flush);
      buffer_.Commit(room - stream_.avail_out);
      if (rc == Z_STREAM_END) return absl::OkStatus();
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        return ZlibError(gzip_, "deflate", rc, stream_);
      }
      if (flush == Z_NO_FLUSH && stream_.avail_in == 0 &&
          stream_.avail_out > 0) {
        return absl::OkStatus();
      }
    }
  }

  const bool gzip_;
  z_stream stream_{};
  ChunkBuffer buffer_;
};

// Deflates 1 MiB blocks independently, each primed with the 32 KiB before
// it and ended by a sync flush (the last by Z_FINISH), so the raw deflate
// pieces concatenate into one stream; the wrapper (header, Adler-32 or
// CRC-32 combined across blocks, ISIZE) is written around them.
//
// Invariant: streams_[i] is an initialized raw deflate stream used only by
// worker i; check_ and total_ cover exactly the blocks written so far.
class DeflateBlockCodec : public BlockCodec {
 public:
  static absl::StatusOr<std::unique_ptr<BlockCodec>> Create(bool gzip,
                                                            int level,
                                                            int threads) {
    std::unique_ptr<DeflateBlockCodec> codec(
        new DeflateBlockCodec(gzip, level, threads));
    for (z_stream& stream : codec->streams_) {
      int rc = deflateInit2(&stream, level, Z_DEFLATED, kRawWindowBits,
                            kMemLevel, Z_DEFAULT_STRATEGY);
      if (rc != Z_OK) return ZlibError(gzip, "deflateInit2", rc, stream);
      ++codec->initialized_;
    }
    return std::unique_ptr<BlockCodec>(std::move(codec));
  }

  ~DeflateBlockCodec() override {
    for (int i = 0; i < initialized_; ++i) deflateEnd(&streams_[i]);
  }

  // The same header zlib writes: for zlib, CMF 78 and FLEVEL from the level
  // (78 01 / 5e / 9c / da); for gzip, no name, mtime 0, XFL from the level,
  // OS 3 (Unix).
  std::string Header() override {
    if (gzip_) {
      char xfl = level_ == 9 ? 2 : (level_ < 2 ? 4 : 0);
      return std::string({'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, xfl, 3});
    }
    int flevel = level_ < 2 ? 0 : (level_ < 6 ? 1 : (level_ == 6 ? 2 : 3));
    unsigned header = (0x78u << 8) | (static_cast<unsigned>(flevel) << 6);
    header += 31 - header % 31;
    return std::string(
        {static_cast<char>(header >> 8), static_cast<char>(header & 0xff)});
  }

  absl::Status CompressBlock(int worker, Block* block) override {
    z_stream& stream = streams_[worker];
    int rc = deflateReset(&stream);
    if (rc == Z_OK && !block->history.empty()) {
      rc = deflateSetDictionary(
          &stream, reinterpret_cast<const Bytef*>(block->history.data()),
          static_cast<uInt>(block->history.size()));
    }
    if (rc != Z_OK) return ZlibError(gzip_, "deflateReset", rc, stream);
    const std::string& data = block->data;
    const Bytef* bytes = reinterpret_cast<const Bytef*>(data.data());
    block->check = static_cast<uint32_t>(
        gzip_ ? crc32_z(0, bytes, data.size())
              : adler32_z(1, bytes, data.size()));

    int flush = block->last ? Z_FINISH : Z_SYNC_FLUSH;
    std::string& output = block->output;
    output.resize(deflateBound(&stream, data.size()) + 64);
    stream.next_in = const_cast<Bytef*>(bytes);
    stream.avail_in = static_cast<uInt>(data.size());
    size_t produced = 0;
    while (true) {
      stream.next_out = reinterpret_cast<Bytef*>(&output[produced]);
      stream.avail_out = static_cast<uInt>(output.size() - produced);
      rc = deflate(&stream, flush);
      produced = output.size() - stream.avail_out;
      if (rc == Z_STREAM_END) break;
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        return ZlibError(gzip_, "deflate", rc, stream);
      }
      if (flush == Z_SYNC_FLUSH && stream.avail_in == 0 &&
          stream.avail_out > 0) {
        break;
      }
      output.resize(output.size() * 2);
    }
    block->compressed = absl::string_view(output.data(), produced);
    return absl::OkStatus();
  }

  void BlockWritten(const Block& block) override {
    z_off_t size = static_cast<z_off_t>(block.data.size());
    check_ = gzip_ ? crc32_combine(check_, block.check, size)
                   : adler32_combine(check_, block.check, size);
    total_ += block.data.size();
  }

  // zlib: Adler-32, big-endian. gzip: CRC-32 and ISIZE (size mod 2^32),
  // little-endian.
  std::string Trailer() override {
    uint32_t check = static_cast<uint32_t>(check_);
    if (!gzip_) {
      return std::string({static_cast<char>(check >> 24),
                          static_cast<char>(check >> 16),
                          static_cast<char>(check >> 8),
                          static_cast<char>(check)});
    }
    uint32_t size = static_cast<uint32_t>(total_);
    return std::string(
        {static_cast<char>(check), static_cast<char>(check >> 8),
         static_cast<char>(check >> 16), static_cast<char>(check >> 24),
         static_cast<char>(size), static_cast<char>(size >> 8),
         static_cast<char>(size >> 16), static_cast<char>(size >> 24)});
  }

 private:
  DeflateBlockCodec(bool gzip, int level, int threads)
      : gzip_(gzip), level_(level), streams_(threads) {
    check_ = gzip ? crc32(0, Z_NULL, 0) : adler32(1, Z_NULL, 0);
  }

  const bool gzip_;
  const int level_;
  std::vector<z_stream> streams_;
  int initialized_ = 0;
  uLong check_;
  uint64_t total_ = 0;
};

// One zlib or gzip stream, inflated as its bytes arrive.
//
// Invariant: stream_ is an initialized inflate stream iff init_ is Z_OK;
// between Feeds it holds no pointer into the caller's input (avail_in 0).
class InflateDecoder : public DecoderBase {
 public:
  explicit InflateDecoder(bool gzip) : gzip_(gzip) {
    init_ = inflateInit2(&stream_, gzip ? kGzipWindowBits : kZlibWindowBits);
  }
  ~InflateDecoder() override {
    if (init_ == Z_OK) inflateEnd(&stream_);
  }

 private:
  absl::Status Step(absl::string_view input, ByteSink* out, size_t* used,
                    bool* end) override {
    if (init_ != Z_OK) return ZlibError(gzip_, "inflateInit2", init_, stream_);
    size_t given = 0;  // bytes of `input` handed to zlib so far
    while (true) {
      if (stream_.avail_in == 0 && given < input.size()) {
        size_t n = std::min(input.size() - given, kMaxLibraryInput);
        stream_.next_in =
            reinterpret_cast<Bytef*>(const_cast<char*>(input.data() + given));
        stream_.avail_in = static_cast<uInt>(n);
        given += n;
      }
      size_t room = buffer_.free_size();
      stream_.next_out = reinterpret_cast<Bytef*>(buffer_.free_data());
      stream_.avail_out = static_cast<uInt>(room);
      int rc = inflate(&stream_, Z_NO_FLUSH);
      buffer_.Commit(room - stream_.avail_out);
      switch (rc) {
        case Z_STREAM_END:
          *used = given - stream_.avail_in;
          stream_.avail_in = 0;
          *end = true;
          return absl::OkStatus();
        case Z_OK:
        case Z_BUF_ERROR:
          break;
        case Z_NEED_DICT:
          return CorruptError(Name(gzip_), stream_.total_in,
                              "stream needs a preset dictionary");
        case Z_DATA_ERROR:
          return CorruptError(Name(gzip_), stream_.total_in,
                              stream_.msg != nullptr ? stream_.msg : "bad data");
        default:
          return ZlibError(gzip_, "inflate", rc, stream_);
      }
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out);
        if (!status.ok()) return status;
      } else if (stream_.avail_in == 0 && given == input.size()) {
        *used = input.size();
        *end = false;
        return absl::OkStatus();
      }
    }
  }

  const bool gzip_;
  z_stream stream_{};
  int init_ = Z_OK;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSink>> NewZlibEncoder(bool gzip, int level,
                                                         int threads,
                                                         ByteSink* out) {
  if (threads <= 1) return ZlibEncoder::Create(gzip, level, out);
  absl::StatusOr<std::unique_ptr<BlockCodec>> codec =
      DeflateBlockCodec::Create(gzip, level, threads);
  if (!codec.ok()) return codec.status();
  return NewParallelEncoder(*std::move(codec), threads, kParallelBlockSize,
                            kWindowSize, out);
}

std::unique_ptr<StreamDecoder> NewZlibDecoder(bool gzip) {
  return std::make_unique<InflateDecoder>(gzip);
}

}  // namespace codec_internal
}  // namespace persistd
