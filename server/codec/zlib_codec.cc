// zlib (RFC 1950) and gzip (RFC 1952) streams, as joblib's BinaryZlibFile
// and BinaryGzipFile write them: deflateInit2(level, Z_DEFLATED, 15 or 31,
// memLevel 8, Z_DEFAULT_STRATEGY).
//
// Two deflate libraries share the work, because zlib is slow where joblib
// users spend their time: array data (float mantissas, mostly literals) is
// compressed by zlib at 30-40 MB/s at every level on the 2-core test
// machine, by ISA-L's igzip level 2 at 260-370 MB/s into output that is no
// larger (CPU time, one thread; deflate_bench.cc measures all of this). But
// ISA-L is not close everywhere: on integer-heavy arrays (tree ensembles)
// each of its levels writes 6-9% more than zlib level 3, its level 3 writes
// 8% more on rounded float32 weights, its levels 1-2 5-6% more on source
// text. So:
//
//   levels 1-3 (joblib's default is 3): the stream is cut into 1 MiB blocks
//     and each block is compressed by whichever library suits it: ISA-L
//     level 2 when, on a 16 KiB sample of the block, its output is within
//     2% of zlib's at the requested level, otherwise zlib at that level.
//     The sample costs 1/64 of a zlib compression of the block. Measured:
//     float32 arrays and rounded model weights 7x zlib's speed and 1-4%
//     smaller, float64 model 5x at the same size, tree arrays at 0.93x
//     zlib's speed (the samples, the blocks' dictionaries) and the same
//     size. On every file measured (floats, model weights, sparse
//     matrices, trees, pickled records, text) level 3 stays within 2.5% of
//     zlib level 3's size, levels 1 and 2 within 2% of zlib's at the same
//     level (mostly smaller; see `deflate_bench --sizes`). ISA-L level 1
//     is no faster than 2 and compresses worse; level 3 is up to 40%
//     slower than 2 and often larger.
//   levels 4-9: zlib alone, as Python; on one thread the stream is byte
//     for byte zlib.compress's (gzip's with mtime 0).
//
// Blocks (levels 1-3 always, and every level with threads > 1) are raw
// deflate primed with the 32 KiB before them and ended by a sync flush
// (pigz-style), so they concatenate into ONE standard stream whichever
// library wrote each; the encoder writes the header zlib would write for
// the level and the trailer (Adler-32 or CRC-32 and size, combined across
// blocks). Zlib's inflate, hence Python and joblib, reads it like any other.
//
// Decoding always uses ISA-L's inflate (1.7-2.1x zlib's speed) on the raw
// deflate payload; the wrapper (header, checksum, size) is parsed and
// checked here, so errors use zlib's wording and the end of the stream is
// known to the byte.
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
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
constexpr int kRawWindowBits = -15;  // no wrapper (blocks)
constexpr size_t kWindowSize = size_t{1} << 15;
constexpr size_t kBlockSize = size_t{1} << 20;

constexpr size_t kZlibTrailerSize = 4;  // Adler-32
constexpr size_t kGzipTrailerSize = 8;  // CRC-32, ISIZE

// Levels up to this one may use ISA-L (see the top of the file).
constexpr int kMaxIsalLevel = 3;
// The ISA-L level used for them.
constexpr int kIsalLevel = 2;
// Bytes at the start of each block that both libraries compress to choose
// one. 16 KiB measured as good as 64 KiB at a quarter of the cost.
constexpr size_t kSampleSize = size_t{16} << 10;
// ISA-L is chosen if its sample is at most this much larger than zlib's,
// in percent. 2 keeps whole streams within 2.5% of zlib's size on every
// file measured; 3 let source text reach 4%.
constexpr size_t kIsalSlackPercent = 2;

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

absl::Status IsalError(bool gzip, absl::string_view what, int rc) {
  return absl::InternalError(
      absl::StrCat(Name(gzip), " ", what, " failed (ISA-L ", rc, ")"));
}

uint32_t LoadBigEndian32(const char* p) {
  const unsigned char* b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) |
         (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

uint32_t LoadLittleEndian32(const char* p) {
  const unsigned char* b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) |
         (uint32_t{b[3]} << 24);
}

// ------------------------------------------------------- zlib, one thread

// Levels 4-9 on one thread: zlib writes the whole stream, wrapper included,
// so it is byte for byte Python's zlib.compress / gzip output.
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

// ----------------------------------------------------------------- blocks

// A raw zlib deflate stream (for blocks and samples).
//
// Invariant: stream_ is initialized from Create to destruction. Not
// movable: zlib's state points back at the z_stream.
class ZlibDeflater {
 public:
  static absl::StatusOr<std::unique_ptr<ZlibDeflater>> Create(bool gzip,
                                                              int level) {
    std::unique_ptr<ZlibDeflater> deflater(new ZlibDeflater);
    int rc = deflateInit2(&deflater->stream_, level, Z_DEFLATED,
                          kRawWindowBits, kMemLevel, Z_DEFAULT_STRATEGY);
    if (rc != Z_OK) {
      deflater->initialized_ = false;
      return ZlibError(gzip, "deflateInit2", rc, deflater->stream_);
    }
    return deflater;
  }

  ~ZlibDeflater() {
    if (initialized_) deflateEnd(&stream_);
  }
  ZlibDeflater(const ZlibDeflater&) = delete;
  ZlibDeflater& operator=(const ZlibDeflater&) = delete;

  // Compresses `data` after `history` (as a dictionary) into *output,
  // ended by a sync flush, or by the final block if `last`; *compressed
  // views the result.
  absl::Status Deflate(bool gzip, absl::string_view history,
                       absl::string_view data, bool last, std::string* output,
                       absl::string_view* compressed) {
    int rc = deflateReset(&stream_);
    if (rc == Z_OK && !history.empty()) {
      rc = deflateSetDictionary(
          &stream_, reinterpret_cast<const Bytef*>(history.data()),
          static_cast<uInt>(history.size()));
    }
    if (rc != Z_OK) return ZlibError(gzip, "deflateReset", rc, stream_);
    const int flush = last ? Z_FINISH : Z_SYNC_FLUSH;
    output->resize(deflateBound(&stream_, data.size()) + 64);
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    stream_.avail_in = static_cast<uInt>(data.size());
    size_t produced = 0;
    while (true) {
      stream_.next_out = reinterpret_cast<Bytef*>(&(*output)[produced]);
      stream_.avail_out = static_cast<uInt>(output->size() - produced);
      rc = deflate(&stream_, flush);
      produced = output->size() - stream_.avail_out;
      if (rc == Z_STREAM_END) break;
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        return ZlibError(gzip, "deflate", rc, stream_);
      }
      if (flush == Z_SYNC_FLUSH && stream_.avail_in == 0 &&
          stream_.avail_out > 0) {
        break;
      }
      output->resize(output->size() * 2);
    }
    *compressed = absl::string_view(output->data(), produced);
    return absl::OkStatus();
  }

 private:
  ZlibDeflater() = default;

  z_stream stream_{};
  bool initialized_ = true;
};

// A raw ISA-L deflate stream at kIsalLevel and the working memory that
// level needs (~80 KiB of stream and ~320 KiB of level buffer, so both on
// the heap).
class IsalDeflater {
 public:
  IsalDeflater()
      : stream_(new isal_zstream), level_buf_(ISAL_DEF_LVL2_DEFAULT) {
    static_assert(kIsalLevel == 2, "level_buf_ is sized for level 2");
    isal_deflate_init(stream_.get());
    stream_->level = kIsalLevel;
    stream_->level_buf = level_buf_.data();
    stream_->level_buf_size = static_cast<uint32_t>(level_buf_.size());
    stream_->gzip_flag = IGZIP_DEFLATE;
  }
  IsalDeflater(const IsalDeflater&) = delete;
  IsalDeflater& operator=(const IsalDeflater&) = delete;

  // As ZlibDeflater::Deflate.
  absl::Status Deflate(bool gzip, absl::string_view history,
                       absl::string_view data, bool last, std::string* output,
                       absl::string_view* compressed) {
    isal_zstream* stream = stream_.get();
    // Keeps the level, its buffer and the (raw) format; drops the history.
    isal_deflate_reset(stream);
    stream->flush = last ? NO_FLUSH : SYNC_FLUSH;
    stream->end_of_stream = last ? 1 : 0;
    if (!history.empty()) {
      int rc = isal_deflate_set_dict(
          stream, reinterpret_cast<uint8_t*>(const_cast<char*>(history.data())),
          static_cast<uint32_t>(history.size()));
      if (rc != COMP_OK) return IsalError(gzip, "isal_deflate_set_dict", rc);
    }
    // Level 2 falls back to stored blocks, so incompressible data grows by
    // a few bytes per 64 KiB; the loop grows the buffer if ever needed.
    output->resize(data.size() + data.size() / 64 + 1024);
    stream->next_in =
        reinterpret_cast<uint8_t*>(const_cast<char*>(data.data()));
    stream->avail_in = static_cast<uint32_t>(data.size());
    size_t produced = 0;
    while (true) {
      stream->next_out = reinterpret_cast<uint8_t*>(&(*output)[produced]);
      stream->avail_out = static_cast<uint32_t>(output->size() - produced);
      int rc = isal_deflate(stream);
      produced = output->size() - stream->avail_out;
      if (rc != COMP_OK) return IsalError(gzip, "isal_deflate", rc);
      // A sync flush is complete when the input is used up and output room
      // is left over (ISA-L's documented test); the last block when the
      // stream has ended.
      bool done = last ? stream->internal_state.state == ZSTATE_END
                       : stream->avail_in == 0 && stream->avail_out > 0;
      if (done) break;
      output->resize(output->size() * 2);
    }
    *compressed = absl::string_view(output->data(), produced);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<isal_zstream> stream_;
  std::vector<uint8_t> level_buf_;
};

// Compresses 1 MiB blocks for a ParallelEncoder (or NewSerialBlockEncoder):
// with zlib at the level, or, for levels up to kMaxIsalLevel, with ISA-L
// where a sample of the block says it does nearly as well. Writes zlib's
// header for the level and the trailer, folding the per-block checksums.
//
// Invariants: workers_[i] is used only by worker i; check_ and total_
// cover exactly the blocks written so far.
class DeflateBlockCodec : public BlockCodec {
 public:
  static absl::StatusOr<std::unique_ptr<BlockCodec>> Create(bool gzip,
                                                            int level,
                                                            int threads) {
    std::unique_ptr<DeflateBlockCodec> codec(
        new DeflateBlockCodec(gzip, level));
    for (int i = 0; i < threads; ++i) {
      auto worker = std::make_unique<Worker>();
      absl::StatusOr<std::unique_ptr<ZlibDeflater>> zlib =
          ZlibDeflater::Create(gzip, level);
      if (!zlib.ok()) return zlib.status();
      worker->zlib = *std::move(zlib);
      if (level <= kMaxIsalLevel) {
        worker->isal = std::make_unique<IsalDeflater>();
      }
      codec->workers_.push_back(std::move(worker));
    }
    return std::unique_ptr<BlockCodec>(std::move(codec));
  }

  // The header zlib writes for the level: for zlib, CMF 78 and FLEVEL from
  // the level (78 01 / 5e / 9c / da); for gzip, no name, mtime 0, XFL from
  // the level, OS 3 (Unix). So the libraries never show in the first
  // bytes, which tools (and joblib's tests) compare.
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
    Worker& w = *workers_[worker];
    const std::string& data = block->data;
    const unsigned char* bytes =
        reinterpret_cast<const unsigned char*>(data.data());
    // ISA-L's checksums: several times zlib's speed (PCLMUL, AVX2), same
    // values.
    block->check = gzip_ ? crc32_gzip_refl(0, bytes, data.size())
                         : isal_adler32(1, bytes, data.size());
    bool use_isal = false;
    if (w.isal != nullptr) {
      absl::Status status = IsalIsCloseEnough(&w, data, &use_isal);
      if (!status.ok()) return status;
    }
    if (use_isal) {
      return w.isal->Deflate(gzip_, block->history, data, block->last,
                             &block->output, &block->compressed);
    }
    return w.zlib->Deflate(gzip_, block->history, data, block->last,
                           &block->output, &block->compressed);
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
  struct Worker {
    std::unique_ptr<ZlibDeflater> zlib;
    std::unique_ptr<IsalDeflater> isal;  // only for levels <= kMaxIsalLevel
    std::string sample_output;
  };

  DeflateBlockCodec(bool gzip, int level)
      : gzip_(gzip),
        level_(level),
        check_(gzip ? crc32(0, Z_NULL, 0) : adler32(1, Z_NULL, 0)) {}

  // Compresses the first kSampleSize bytes of `data` (without history)
  // with both libraries; *close is whether ISA-L's output is within
  // kIsalSlackPercent of zlib's.
  absl::Status IsalIsCloseEnough(Worker* w, absl::string_view data,
                                 bool* close) {
    absl::string_view sample = data.substr(0, kSampleSize);
    absl::string_view isal;
    absl::Status status = w->isal->Deflate(gzip_, {}, sample, false,
                                           &w->sample_output, &isal);
    if (!status.ok()) return status;
    const size_t isal_size = isal.size();
    absl::string_view zlib;
    status = w->zlib->Deflate(gzip_, {}, sample, false, &w->sample_output,
                              &zlib);
    if (!status.ok()) return status;
    *close = isal_size * 100 <= zlib.size() * (100 + kIsalSlackPercent);
    return absl::OkStatus();
  }

  const bool gzip_;
  const int level_;
  std::vector<std::unique_ptr<Worker>> workers_;
  uLong check_;
  uint64_t total_ = 0;
};

// ---------------------------------------------------------------- decode

// One zlib or gzip stream, inflated as its bytes arrive: the wrapper is
// parsed here, the deflate payload goes to ISA-L's raw inflate (which also
// computes the checksum of the output), and the trailer is checked here.
// Errors use zlib's wording; their offsets are those of the offending byte
// (for the payload, of the last byte ISA-L had read, up to 8 past it).
//
// ISA-L reads up to 8 bytes ahead into a bit buffer (read_in). When the
// payload ends, the whole bytes still there are the first bytes after it:
// they start the trailer, and any beyond the trailer are given back (they
// belong to whatever follows the stream).
//
// Invariants: between Feeds, state_ holds no pointer into the caller's
// input (avail_in 0); header_bytes_ counts the header bytes parsed so far,
// which are the first bytes of the stream.
class InflateDecoder : public DecoderBase {
 public:
  explicit InflateDecoder(bool gzip)
      : gzip_(gzip),
        trailer_size_(gzip ? kGzipTrailerSize : kZlibTrailerSize),
        state_(new inflate_state) {
    isal_inflate_init(state_.get());
    // Raw deflate; ISA-L keeps the CRC-32 or Adler-32 of the output.
    state_->crc_flag = gzip ? ISAL_GZIP_NO_HDR : ISAL_ZLIB_NO_HDR;
  }

 private:
  enum class Stage {
    kHeader,   // zlib's 2 bytes, or gzip's 10 and the optional fields
    kPayload,  // deflate data, in ISA-L's hands
    kTrailer,  // checksum (and size), collected in trailer_
  };

  // The parts of a gzip header in stream order (RFC 1952 section 2.3);
  // all but kFixed are present only if FLG says so.
  enum class GzipField {
    kFixed,        // ID1 ID2 CM FLG MTIME(4) XFL OS
    kExtraLength,  // XLEN, 2 bytes
    kExtra,        // XLEN bytes
    kName,         // zero-terminated
    kComment,      // zero-terminated
    kHeaderCrc,    // CRC16: the low half of the header's CRC-32
    kDone,
  };

  // gzip FLG bits.
  static constexpr unsigned kFlagHeaderCrc = 0x02;
  static constexpr unsigned kFlagExtra = 0x04;
  static constexpr unsigned kFlagName = 0x08;
  static constexpr unsigned kFlagComment = 0x10;
  static constexpr unsigned kFlagsReserved = 0xe0;

  absl::Status Step(absl::string_view input, ByteSink* out, size_t* used,
                    bool* end) override {
    size_t pos = 0;
    if (stage_ == Stage::kHeader) {
      absl::Status status = gzip_ ? ParseGzipHeader(input, &pos)
                                  : ParseZlibHeader(input, &pos);
      if (!status.ok()) return status;
    }
    if (stage_ == Stage::kPayload) {
      absl::Status status = Inflate(input, out, &pos);
      if (!status.ok()) return status;
    }
    if (stage_ == Stage::kTrailer) {
      size_t n = std::min(trailer_size_ - trailer_.size(), input.size() - pos);
      trailer_.append(input.data() + pos, n);
      pos += n;
      if (trailer_.size() == trailer_size_) {
        absl::Status status = CheckTrailer();
        if (!status.ok()) return status;
        *used = pos;
        *end = true;
        return absl::OkStatus();
      }
    }
    // Whatever the stage, it stopped because the input ran out.
    *used = input.size();
    *end = false;
    return absl::OkStatus();
  }

  absl::Status Corrupt(uint64_t offset, absl::string_view detail) const {
    return CorruptError(Name(gzip_), offset, detail);
  }

  // CMF and FLG, checked as zlib's inflate checks them: a window of at most
  // 32 KiB and no preset dictionary (joblib never sets one).
  absl::Status ParseZlibHeader(absl::string_view input, size_t* pos) {
    while (*pos < input.size() && header_.size() < 2) {
      header_.push_back(input[(*pos)++]);
    }
    if (header_.size() < 2) return absl::OkStatus();
    const unsigned cmf = static_cast<unsigned char>(header_[0]);
    const unsigned flg = static_cast<unsigned char>(header_[1]);
    if ((cmf * 256 + flg) % 31 != 0) {
      return Corrupt(0, "incorrect header check");
    }
    if ((cmf & 0x0f) != Z_DEFLATED) {
      return Corrupt(0, "unknown compression method");
    }
    if ((cmf >> 4) + 8 > 15) return Corrupt(0, "invalid window size");
    if (flg & 0x20) return Corrupt(1, "stream needs a preset dictionary");
    header_bytes_ = 2;
    stage_ = Stage::kPayload;
    return absl::OkStatus();
  }

  // Checks what zlib's inflate checks: the magic, CM 8, no reserved flag,
  // and the header CRC when present. Name and comment are skipped.
  absl::Status ParseGzipHeader(absl::string_view input, size_t* pos) {
    while (*pos < input.size() && field_ != GzipField::kDone) {
      const GzipField field = field_;
      const size_t start = *pos;
      switch (field) {
        case GzipField::kFixed:
        case GzipField::kExtraLength:
        case GzipField::kHeaderCrc: {
          const size_t want = field == GzipField::kFixed ? 10 : 2;
          size_t n = std::min(want - header_.size(), input.size() - *pos);
          header_.append(input.data() + *pos, n);
          *pos += n;
          header_bytes_ += n;
          if (header_.size() == want) {
            absl::Status status = FixedFieldDone();
            if (!status.ok()) return status;
          }
          break;
        }
        case GzipField::kExtra: {
          size_t n = std::min<size_t>(extra_left_, input.size() - *pos);
          *pos += n;
          header_bytes_ += n;
          extra_left_ -= n;
          if (extra_left_ == 0) field_ = NextField(field);
          break;
        }
        case GzipField::kName:
        case GzipField::kComment: {
          const char* begin = input.data() + *pos;
          const void* nul = std::memchr(begin, '\0', input.size() - *pos);
          size_t n = nul == nullptr
                         ? input.size() - *pos
                         : static_cast<const char*>(nul) - begin + 1;
          *pos += n;
          header_bytes_ += n;
          if (nul != nullptr) field_ = NextField(field);
          break;
        }
        case GzipField::kDone:
          break;
      }
      // FHCRC covers every header byte before it.
      if (field != GzipField::kHeaderCrc) {
        header_crc_ =
            crc32_z(header_crc_,
                    reinterpret_cast<const Bytef*>(input.data() + start),
                    *pos - start);
      }
    }
    if (field_ == GzipField::kDone) stage_ = Stage::kPayload;
    return absl::OkStatus();
  }

  // The fixed-size field field_ is complete in header_, whose last byte is
  // stream byte header_bytes_ - 1.
  absl::Status FixedFieldDone() {
    const unsigned char* b =
        reinterpret_cast<const unsigned char*>(header_.data());
    switch (field_) {
      case GzipField::kFixed:
        if (b[0] != 0x1f || b[1] != 0x8b) {
          return Corrupt(0, "incorrect header check");
        }
        if (b[2] != Z_DEFLATED) return Corrupt(2, "unknown compression method");
        flags_ = b[3];
        if (flags_ & kFlagsReserved) {
          return Corrupt(3, "unknown header flags set");
        }
        break;
      case GzipField::kExtraLength:
        extra_left_ = b[0] | (b[1] << 8);
        break;
      case GzipField::kHeaderCrc:
        if (static_cast<uLong>(b[0] | (b[1] << 8)) != (header_crc_ & 0xffff)) {
          return Corrupt(header_bytes_ - 2, "header crc mismatch");
        }
        break;
      default:
        break;
    }
    header_.clear();
    field_ = NextField(field_);
    // An empty extra field has nothing to skip.
    if (field_ == GzipField::kExtra && extra_left_ == 0) {
      field_ = NextField(GzipField::kExtra);
    }
    return absl::OkStatus();
  }

  // The first part after `field` that is present.
  GzipField NextField(GzipField field) const {
    if (field == GzipField::kExtraLength) return GzipField::kExtra;
    struct Optional {
      GzipField field;
      unsigned flag;
    };
    static constexpr Optional kOptional[] = {
        {GzipField::kExtraLength, kFlagExtra},
        {GzipField::kName, kFlagName},
        {GzipField::kComment, kFlagComment},
        {GzipField::kHeaderCrc, kFlagHeaderCrc},
    };
    // GzipField lists the parts in header order.
    for (const Optional& part : kOptional) {
      if (part.field > field && (flags_ & part.flag)) return part.field;
    }
    return GzipField::kDone;
  }

  // Inflates input[*pos, end) until it is used up (*pos = input.size()) or
  // the payload ends (stage_ becomes kTrailer, *pos just past the payload
  // and the trailer bytes ISA-L had read ahead).
  absl::Status Inflate(absl::string_view input, ByteSink* out, size_t* pos) {
    inflate_state* state = state_.get();
    size_t given = *pos;  // bytes of `input` handed to ISA-L so far
    while (true) {
      if (state->avail_in == 0 && given < input.size()) {
        size_t n = std::min(input.size() - given, kMaxLibraryInput);
        state->next_in =
            reinterpret_cast<uint8_t*>(const_cast<char*>(input.data() + given));
        state->avail_in = static_cast<uint32_t>(n);
        given += n;
      }
      const size_t taken_before = given - state->avail_in;
      const size_t room = buffer_.free_size();
      state->next_out = reinterpret_cast<uint8_t*>(buffer_.free_data());
      state->avail_out = static_cast<uint32_t>(room);
      int rc = isal_inflate(state);
      const size_t produced = room - state->avail_out;
      buffer_.Commit(produced);
      const size_t taken = given - state->avail_in;  // input[0, taken) read
      if (rc != ISAL_DECOMP_OK) {
        state->avail_in = 0;
        return Corrupt(fed_ + taken, InflateErrorDetail(rc));
      }
      if (state->block_state == ISAL_BLOCK_FINISH) {
        state->avail_in = 0;
        return PayloadEnded(taken, pos);
      }
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out);
        if (!status.ok()) return status;
      } else if (state->avail_in == 0 && given == input.size()) {
        *pos = input.size();
        return absl::OkStatus();
      } else if (produced == 0 && taken == taken_before) {
        // Input and output room left, yet nothing happened: calling again
        // would spin. ISA-L never does this; fail rather than hang.
        state->avail_in = 0;
        return absl::InternalError(
            absl::StrCat(Name(gzip_), " isal_inflate made no progress near "
                         "byte ", fed_ + taken));
      }
    }
  }

  // The payload ended with input[0, taken) read by ISA-L, the last few of
  // those bytes perhaps still whole in its bit buffer.
  absl::Status PayloadEnded(size_t taken, size_t* pos) {
    inflate_state* state = state_.get();
    const int bits = std::max<int32_t>(state->read_in_length, 0);
    // Drop the padding bits that complete the payload's last byte.
    const uint64_t buffered = bits > 0 ? state->read_in >> (bits % 8) : 0;
    const size_t buffered_bytes = static_cast<size_t>(bits / 8);
    state->read_in = 0;
    state->read_in_length = 0;
    trailer_offset_ = fed_ + taken - buffered_bytes;
    const size_t into_trailer = std::min(buffered_bytes, trailer_size_);
    for (size_t i = 0; i < into_trailer; ++i) {
      trailer_.push_back(static_cast<char>(buffered >> (8 * i)));
    }
    const size_t give_back = buffered_bytes - into_trailer;
    // ISA-L reads ahead only in the call that finds the end, so bytes past
    // the trailer always come from this input. Checked, not assumed: a
    // wrong *used would silently misplace whatever follows the stream.
    if (give_back > taken) {
      return absl::InternalError(absl::StrCat(
          Name(gzip_), " inflate read past the end of the stream at byte ",
          trailer_offset_));
    }
    *pos = taken - give_back;
    stage_ = Stage::kTrailer;
    return absl::OkStatus();
  }

  // trailer_ is complete: compares it with what ISA-L computed.
  absl::Status CheckTrailer() const {
    const inflate_state* state = state_.get();
    if (!gzip_) {
      if (LoadBigEndian32(trailer_.data()) != state->crc) {
        return Corrupt(trailer_offset_, "incorrect data check");
      }
      return absl::OkStatus();
    }
    if (LoadLittleEndian32(trailer_.data()) != state->crc) {
      return Corrupt(trailer_offset_, "incorrect data check");
    }
    // ISIZE is the size modulo 2^32, as is ISA-L's 32-bit total_out.
    if (LoadLittleEndian32(trailer_.data() + 4) != state->total_out) {
      return Corrupt(trailer_offset_ + 4, "incorrect length check");
    }
    return absl::OkStatus();
  }

  static absl::string_view InflateErrorDetail(int rc) {
    switch (rc) {
      case ISAL_INVALID_BLOCK:
        return "invalid block";
      case ISAL_INVALID_SYMBOL:
        return "invalid literal/length or distance code";
      case ISAL_INVALID_LOOKBACK:
        return "invalid distance too far back";
    }
    return "invalid deflate data";
  }

  const bool gzip_;
  const size_t trailer_size_;
  const std::unique_ptr<inflate_state> state_;  // ~85 KiB: on the heap
  Stage stage_ = Stage::kHeader;
  uint64_t header_bytes_ = 0;
  std::string header_;  // the current fixed-size header field so far
  GzipField field_ = GzipField::kFixed;
  unsigned flags_ = 0;     // gzip FLG
  size_t extra_left_ = 0;  // bytes of the gzip extra field still to skip
  uLong header_crc_ = 0;   // CRC-32 of the gzip header bytes so far
  std::string trailer_;    // trailer bytes collected so far
  uint64_t trailer_offset_ = 0;  // stream offset of the trailer
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSink>> NewZlibEncoder(bool gzip, int level,
                                                         int threads,
                                                         ByteSink* out) {
  if (threads <= 1 && level > kMaxIsalLevel) {
    return ZlibEncoder::Create(gzip, level, out);
  }
  absl::StatusOr<std::unique_ptr<BlockCodec>> codec =
      DeflateBlockCodec::Create(gzip, level, std::max(threads, 1));
  if (!codec.ok()) return codec.status();
  if (threads <= 1) {
    return NewSerialBlockEncoder(*std::move(codec), kBlockSize, kWindowSize,
                                 out);
  }
  return NewParallelEncoder(*std::move(codec), threads, kBlockSize,
                            kWindowSize, out);
}

std::unique_ptr<StreamDecoder> NewZlibDecoder(bool gzip) {
  return std::make_unique<InflateDecoder>(gzip);
}

}  // namespace codec_internal
}  // namespace persistd
