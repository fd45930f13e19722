// zstd frames (not a joblib codec): ZSTD_compressStream2 with the level,
// a content checksum, and libzstd's workers when threads > 1.
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/codec/codec_internal.h"

namespace persistd {
namespace codec_internal {
namespace {

constexpr absl::string_view kName = "zstd";

absl::Status ZstdError(absl::string_view what, size_t code) {
  std::string message =
      absl::StrCat("zstd ", what, " failed: ", ZSTD_getErrorName(code));
  if (ZSTD_getErrorCode(code) == ZSTD_error_memory_allocation) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InternalError(message);
}

// Invariant: ctx_ is a compression context with the parameters set, from
// Create to destruction.
class ZstdEncoder : public Encoder {
 public:
  static absl::StatusOr<std::unique_ptr<ByteSink>> Create(int level,
                                                          int threads,
                                                          ByteSink* out) {
    std::unique_ptr<ZstdEncoder> encoder(new ZstdEncoder(out));
    ZSTD_CCtx* ctx = ZSTD_createCCtx();
    if (ctx == nullptr) {
      return absl::ResourceExhaustedError("zstd ZSTD_createCCtx failed");
    }
    encoder->ctx_ = ctx;
    size_t rc = ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, level);
    if (ZSTD_isError(rc)) return ZstdError("setting the level", rc);
    rc = ZSTD_CCtx_setParameter(ctx, ZSTD_c_checksumFlag, 1);
    if (ZSTD_isError(rc)) return ZstdError("enabling the checksum", rc);
    if (threads > 1) {
      // Fails on a libzstd built without threads: then stay single-threaded.
      rc = ZSTD_CCtx_setParameter(ctx, ZSTD_c_nbWorkers, threads);
      if (ZSTD_isError(rc)) ZSTD_CCtx_setParameter(ctx, ZSTD_c_nbWorkers, 0);
    }
    return std::unique_ptr<ByteSink>(std::move(encoder));
  }

  ~ZstdEncoder() override { ZSTD_freeCCtx(ctx_); }

 private:
  explicit ZstdEncoder(ByteSink* out) : Encoder(out) {}

  absl::Status Compress(absl::string_view data) override {
    ZSTD_inBuffer in = {data.data(), data.size(), 0};
    while (in.pos < in.size) {
      absl::Status status = Step(&in, ZSTD_e_continue, nullptr);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  absl::Status End() override {
    ZSTD_inBuffer in = {nullptr, 0, 0};
    size_t remaining = 1;
    while (remaining != 0) {
      absl::Status status = Step(&in, ZSTD_e_end, &remaining);
      if (!status.ok()) return status;
    }
    return buffer_.FlushTo(out());
  }

  // One ZSTD_compressStream2 call into the free part of buffer_; stores the
  // return value (bytes left to flush) in *remaining when not null.
  absl::Status Step(ZSTD_inBuffer* in, ZSTD_EndDirective directive,
                    size_t* remaining) {
    if (buffer_.full()) {
      absl::Status status = buffer_.FlushTo(out());
      if (!status.ok()) return status;
    }
    ZSTD_outBuffer output = {buffer_.free_data(), buffer_.free_size(), 0};
    size_t rc = ZSTD_compressStream2(ctx_, &output, in, directive);
    buffer_.Commit(output.pos);
    if (ZSTD_isError(rc)) return ZstdError("ZSTD_compressStream2", rc);
    if (remaining != nullptr) *remaining = rc;
    return absl::OkStatus();
  }

  ZSTD_CCtx* ctx_ = nullptr;
  ChunkBuffer buffer_;
};

// One zstd frame, decoded as its bytes arrive.
//
// libzstd (1.5.4) decodes a frame differently depending on how its bytes
// arrive, and the decoder makes the result independent of that:
//  - a whole frame in one call's input, with output room for its content,
//    is decoded in one pass, which checks more than streaming does (an
//    empty compressed block is corrupt there only): the first byte is fed
//    alone, so libzstd always streams;
//  - streaming does not check the content size a header declares when the
//    frame ends with an empty block: the decoder checks it, from header_,
//    the first bytes of the frame, and decoded_, its output so far;
//  - a legacy (v0.x) frame decodes only when its magic number arrives in
//    one piece: only standard frames are zstd here, as for DetectCodec, and
//    legacy and skippable frames are corrupt input.
class ZstdDecoder : public DecoderBase {
 public:
  ZstdDecoder() : ctx_(ZSTD_createDCtx()) {}
  ~ZstdDecoder() override { ZSTD_freeDCtx(ctx_); }

 private:
  // ZSTD_FRAMEHEADERSIZE_MAX, which zstd.h keeps to static linking.
  static constexpr size_t kMaxHeader = 18;
  // ZSTD_MAGICNUMBER, little-endian.
  static constexpr absl::string_view kMagic{"\x28\xb5\x2f\xfd", 4};

  absl::Status Step(absl::string_view input, ByteSink* out, size_t* used,
                    bool* end) override {
    if (ctx_ == nullptr) {
      return absl::ResourceExhaustedError("zstd ZSTD_createDCtx failed");
    }
    if (header_.size() < kMaxHeader) {
      header_.append(input.data(),
                     std::min(input.size(), kMaxHeader - header_.size()));
      const size_t n = std::min(header_.size(), kMagic.size());
      if (absl::string_view(header_).substr(0, n) != kMagic.substr(0, n)) {
        return CorruptError(kName, 0, "not a zstd frame (bad magic number)");
      }
    }
    ZSTD_inBuffer in = {input.data(), input.size(), 0};
    if (fed_ == 0 && in.size > 1) in.size = 1;  // the first byte alone
    while (true) {
      ZSTD_outBuffer output = {buffer_.free_data(), buffer_.free_size(), 0};
      // Returns 0 once a frame is decoded and flushed, and stops there.
      size_t rc = ZSTD_decompressStream(ctx_, &output, &in);
      buffer_.Commit(output.pos);
      decoded_ += output.pos;
      if (ZSTD_isError(rc)) {
        if (ZSTD_getErrorCode(rc) == ZSTD_error_memory_allocation) {
          return ZstdError("ZSTD_decompressStream", rc);
        }
        return CorruptError(kName, fed_ + in.pos, ZSTD_getErrorName(rc));
      }
      if (rc == 0) {
        const unsigned long long declared =
            ZSTD_getFrameContentSize(header_.data(), header_.size());
        if (declared != ZSTD_CONTENTSIZE_UNKNOWN &&
            declared != ZSTD_CONTENTSIZE_ERROR && declared != decoded_) {
          return CorruptError(
              kName, fed_ + in.pos,
              absl::StrCat("the frame header declares ", declared,
                           " bytes, the frame holds ", decoded_));
        }
        *used = in.pos;
        *end = true;
        return absl::OkStatus();
      }
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out);
        if (!status.ok()) return status;
      } else if (in.pos == in.size) {
        if (in.size < input.size()) {
          in.size = input.size();  // the rest after the first byte
          continue;
        }
        *used = in.pos;
        *end = false;
        return absl::OkStatus();
      }
    }
  }

  ZSTD_DCtx* const ctx_;
  std::string header_;    // the first (up to kMaxHeader) bytes fed
  uint64_t decoded_ = 0;  // bytes of output so far
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSink>> NewZstdEncoder(int level,
                                                         int threads,
                                                         ByteSink* out) {
  return ZstdEncoder::Create(level, threads, out);
}

std::unique_ptr<StreamDecoder> NewZstdDecoder() {
  return std::make_unique<ZstdDecoder>();
}

}  // namespace codec_internal
}  // namespace persistd
