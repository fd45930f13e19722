// LZ4 frames, as python-lz4's LZ4FrameFile writes them for joblib: 64 KiB
// linked blocks, no checksums, no content size (FLG 40, BD 40), level as
// given (0 = fast). The parallel encoder writes independent blocks (FLG 60).
#include <lz4frame.h>

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

constexpr absl::string_view kName = "lz4";
// Input handed to one LZ4F_compressUpdate; its worst-case output must fit
// in a ChunkBuffer many times over.
constexpr size_t kInputStep = size_t{64} << 10;
constexpr size_t kParallelBlockSize = size_t{1} << 20;
constexpr size_t kEndMarkSize = 4;

LZ4F_preferences_t Preferences(int level, LZ4F_blockMode_t mode) {
  LZ4F_preferences_t prefs;
  std::memset(&prefs, 0, sizeof(prefs));
  prefs.frameInfo.blockSizeID = LZ4F_max64KB;
  prefs.frameInfo.blockMode = mode;
  prefs.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
  prefs.frameInfo.frameType = LZ4F_frame;
  prefs.frameInfo.contentSize = 0;  // not stored
  prefs.frameInfo.blockChecksumFlag = LZ4F_noBlockChecksum;
  prefs.compressionLevel = level;
  prefs.autoFlush = 0;
  return prefs;
}

absl::Status Lz4Error(absl::string_view what, size_t code) {
  return absl::InternalError(
      absl::StrCat("lz4 ", what, " failed: ", LZ4F_getErrorName(code)));
}

// Invariant: ctx_ is a compression context that has begun a frame (its
// header is in buffer_ or already written) from Create to destruction.
class Lz4Encoder : public Encoder {
 public:
  static absl::StatusOr<std::unique_ptr<ByteSink>> Create(int level,
                                                          ByteSink* out) {
    std::unique_ptr<Lz4Encoder> encoder(new Lz4Encoder(level, out));
    size_t rc = LZ4F_createCompressionContext(&encoder->ctx_, LZ4F_VERSION);
    if (LZ4F_isError(rc)) return Lz4Error("LZ4F_createCompressionContext", rc);
    ChunkBuffer& buffer = encoder->buffer_;
    rc = LZ4F_compressBegin(encoder->ctx_, buffer.free_data(),
                            buffer.free_size(), &encoder->prefs_);
    if (LZ4F_isError(rc)) return Lz4Error("LZ4F_compressBegin", rc);
    buffer.Commit(rc);
    return std::unique_ptr<ByteSink>(std::move(encoder));
  }

  ~Lz4Encoder() override { LZ4F_freeCompressionContext(ctx_); }

 private:
  Lz4Encoder(int level, ByteSink* out)
      : Encoder(out), prefs_(Preferences(level, LZ4F_blockLinked)) {}

  absl::Status Compress(absl::string_view data) override {
    while (!data.empty()) {
      size_t n = std::min(data.size(), kInputStep);
      absl::Status status = MakeRoom(LZ4F_compressBound(n, &prefs_));
      if (!status.ok()) return status;
      size_t rc =
          LZ4F_compressUpdate(ctx_, buffer_.free_data(), buffer_.free_size(),
                              data.data(), n, nullptr);
      if (LZ4F_isError(rc)) return Lz4Error("LZ4F_compressUpdate", rc);
      buffer_.Commit(rc);
      data.remove_prefix(n);
    }
    return absl::OkStatus();
  }

  absl::Status End() override {
    absl::Status status = MakeRoom(LZ4F_compressBound(0, &prefs_));
    if (!status.ok()) return status;
    size_t rc = LZ4F_compressEnd(ctx_, buffer_.free_data(),
                                 buffer_.free_size(), nullptr);
    if (LZ4F_isError(rc)) return Lz4Error("LZ4F_compressEnd", rc);
    buffer_.Commit(rc);
    return buffer_.FlushTo(out());
  }

  absl::Status MakeRoom(size_t bound) {
    if (buffer_.free_size() >= bound) return absl::OkStatus();
    return buffer_.FlushTo(out());
  }

  const LZ4F_preferences_t prefs_;
  LZ4F_cctx* ctx_ = nullptr;
  ChunkBuffer buffer_;
};

// Compresses 1 MiB runs of independent 64 KiB blocks: each run is a whole
// frame from LZ4F, from which the header and the end mark are cut, so the
// runs concatenate into the blocks of one frame.
//
// Invariant: contexts_[i] is used only by worker i; header_ is what
// LZ4F_compressBegin writes for prefs_.
class Lz4BlockCodec : public BlockCodec {
 public:
  static absl::StatusOr<std::unique_ptr<BlockCodec>> Create(int level,
                                                            int threads) {
    std::unique_ptr<Lz4BlockCodec> codec(new Lz4BlockCodec(level, threads));
    for (LZ4F_cctx*& ctx : codec->contexts_) {
      size_t rc = LZ4F_createCompressionContext(&ctx, LZ4F_VERSION);
      if (LZ4F_isError(rc)) {
        ctx = nullptr;
        return Lz4Error("LZ4F_createCompressionContext", rc);
      }
    }
    char header[LZ4F_HEADER_SIZE_MAX];
    size_t rc = LZ4F_compressBegin(codec->contexts_[0], header, sizeof(header),
                                   &codec->prefs_);
    if (LZ4F_isError(rc)) return Lz4Error("LZ4F_compressBegin", rc);
    codec->header_.assign(header, rc);
    return std::unique_ptr<BlockCodec>(std::move(codec));
  }

  ~Lz4BlockCodec() override {
    for (LZ4F_cctx* ctx : contexts_) LZ4F_freeCompressionContext(ctx);
  }

  std::string Header() override { return header_; }

  absl::Status CompressBlock(int worker, Block* block) override {
    LZ4F_cctx* ctx = contexts_[worker];
    const std::string& data = block->data;
    std::string& output = block->output;
    output.resize(LZ4F_compressFrameBound(data.size(), &prefs_));
    char* dst = &output[0];
    size_t room = output.size();
    size_t header = LZ4F_compressBegin(ctx, dst, room, &prefs_);
    if (LZ4F_isError(header)) return Lz4Error("LZ4F_compressBegin", header);
    size_t body = LZ4F_compressUpdate(ctx, dst + header, room - header,
                                      data.data(), data.size(), nullptr);
    if (LZ4F_isError(body)) return Lz4Error("LZ4F_compressUpdate", body);
    size_t end = LZ4F_compressEnd(ctx, dst + header + body,
                                  room - header - body, nullptr);
    if (LZ4F_isError(end)) return Lz4Error("LZ4F_compressEnd", end);
    if (header != header_.size() || end < kEndMarkSize) {
      return absl::InternalError("lz4 frame layout is not the expected one");
    }
    block->compressed =
        absl::string_view(dst + header, body + end - kEndMarkSize);
    return absl::OkStatus();
  }

  std::string Trailer() override { return std::string(kEndMarkSize, '\0'); }

 private:
  Lz4BlockCodec(int level, int threads)
      : prefs_(Preferences(level, LZ4F_blockIndependent)),
        contexts_(threads, nullptr) {}

  const LZ4F_preferences_t prefs_;
  std::vector<LZ4F_cctx*> contexts_;
  std::string header_;
};

// One LZ4 frame, decoded as its bytes arrive.
//
// Invariant: ctx_ is a decompression context iff init_ is not an error.
class Lz4Decoder : public DecoderBase {
 public:
  Lz4Decoder() { init_ = LZ4F_createDecompressionContext(&ctx_, LZ4F_VERSION); }
  ~Lz4Decoder() override {
    if (!LZ4F_isError(init_)) LZ4F_freeDecompressionContext(ctx_);
  }

 private:
  absl::Status Step(absl::string_view input, ByteSink* out, size_t* used,
                    bool* end) override {
    if (LZ4F_isError(init_)) {
      return Lz4Error("LZ4F_createDecompressionContext", init_);
    }
    size_t pos = 0;
    while (true) {
      size_t dst_size = buffer_.free_size();
      size_t src_size = input.size() - pos;
      // Returns 0 exactly at the end of the frame, without reading past it.
      size_t hint = LZ4F_decompress(ctx_, buffer_.free_data(), &dst_size,
                                    input.data() + pos, &src_size, nullptr);
      if (LZ4F_isError(hint)) {
        return CorruptError(kName, fed_ + pos, LZ4F_getErrorName(hint));
      }
      buffer_.Commit(dst_size);
      pos += src_size;
      if (hint == 0) {
        *used = pos;
        *end = true;
        return absl::OkStatus();
      }
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out);
        if (!status.ok()) return status;
      } else if (pos == input.size()) {
        *used = pos;
        *end = false;
        return absl::OkStatus();
      } else if (src_size == 0 && dst_size == 0) {
        return absl::InternalError("lz4 decoder made no progress");
      }
    }
  }

  LZ4F_dctx* ctx_ = nullptr;
  size_t init_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSink>> NewLz4Encoder(int level,
                                                        int threads,
                                                        ByteSink* out) {
  if (threads <= 1) return Lz4Encoder::Create(level, out);
  absl::StatusOr<std::unique_ptr<BlockCodec>> codec =
      Lz4BlockCodec::Create(level, threads);
  if (!codec.ok()) return codec.status();
  return NewParallelEncoder(*std::move(codec), threads, kParallelBlockSize,
                            /*history_size=*/0, out);
}

std::unique_ptr<StreamDecoder> NewLz4Decoder() {
  return std::make_unique<Lz4Decoder>();
}

}  // namespace codec_internal
}  // namespace persistd
