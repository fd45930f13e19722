// .lzma (LZMA_Alone) and .xz streams, as Python's lzma.LZMAFile writes them:
// lzma_alone_encoder(lzma_lzma_preset(level)) with an unknown size (ff x 8)
// and an end marker, and lzma_easy_encoder(level, LZMA_CHECK_CRC64).
#include <lzma.h>

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

absl::string_view Name(bool xz) { return xz ? "xz" : "lzma"; }

std::string LzmaRetName(lzma_ret rc) {
  switch (rc) {
    case LZMA_MEM_ERROR:
      return "out of memory";
    case LZMA_MEMLIMIT_ERROR:
      return "memory limit reached";
    case LZMA_FORMAT_ERROR:
      return "not a valid header (wrong format)";
    case LZMA_OPTIONS_ERROR:
      return "unsupported options";
    case LZMA_DATA_ERROR:
      return "data is corrupt";
    case LZMA_BUF_ERROR:
      return "no progress possible";
    case LZMA_PROG_ERROR:
      return "programming error";
    case LZMA_UNSUPPORTED_CHECK:
      return "unsupported integrity check";
    default:
      return absl::StrCat("error ", static_cast<int>(rc));
  }
}

absl::Status LzmaError(bool xz, absl::string_view what, lzma_ret rc) {
  std::string message =
      absl::StrCat(Name(xz), " ", what, " failed: ", LzmaRetName(rc));
  if (rc == LZMA_MEM_ERROR || rc == LZMA_MEMLIMIT_ERROR) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InternalError(message);
}

// Invariant: stream_ holds an initialized coder from Create to destruction.
class LzmaEncoder : public Encoder {
 public:
  // How long liblzma's multi-threaded encoder may block in one lzma_code
  // before it returns without progress, so `interrupted_` gets asked.
  static constexpr uint32_t kWaitMs = 50;

  static absl::StatusOr<std::unique_ptr<ByteSink>> Create(
      bool xz, int level, int threads, ByteSink* out, Interrupted interrupted) {
    std::unique_ptr<LzmaEncoder> encoder(
        new LzmaEncoder(xz, out, std::move(interrupted)));
    lzma_stream* stream = &encoder->stream_;
    const uint32_t preset = static_cast<uint32_t>(level);
    lzma_ret rc;
    if (!xz) {
      lzma_options_lzma options;
      if (lzma_lzma_preset(&options, preset)) {
        return LzmaError(xz, "lzma_lzma_preset", LZMA_OPTIONS_ERROR);
      }
      rc = lzma_alone_encoder(stream, &options);
    } else if (threads > 1) {
      // Several independent blocks (default size 3 x dictionary), one
      // stream; any xz decoder reads it.
      lzma_mt mt{};
      mt.threads = static_cast<uint32_t>(threads);
      mt.preset = preset;
      mt.check = LZMA_CHECK_CRC64;
      if (encoder->interrupted_) mt.timeout = kWaitMs;
      rc = lzma_stream_encoder_mt(stream, &mt);
    } else {
      rc = lzma_easy_encoder(stream, preset, LZMA_CHECK_CRC64);
    }
    if (rc != LZMA_OK) return LzmaError(xz, "encoder init", rc);
    return std::unique_ptr<ByteSink>(std::move(encoder));
  }

  ~LzmaEncoder() override { lzma_end(&stream_); }

 private:
  LzmaEncoder(bool xz, ByteSink* out, Interrupted interrupted)
      : Encoder(out), xz_(xz), interrupted_(std::move(interrupted)) {}

  absl::Status Compress(absl::string_view data) override {
    stream_.next_in = reinterpret_cast<const uint8_t*>(data.data());
    stream_.avail_in = data.size();
    return Code(LZMA_RUN);
  }

  absl::Status End() override {
    absl::Status status = Code(LZMA_FINISH);
    if (!status.ok()) return status;
    return buffer_.FlushTo(out());
  }

  // Runs lzma_code until the input is used up (LZMA_RUN) or the stream is
  // ended (LZMA_FINISH).
  absl::Status Code(lzma_action action) {
    while (true) {
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out());
        if (!status.ok()) return status;
      }
      size_t room = buffer_.free_size();
      stream_.next_out = reinterpret_cast<uint8_t*>(buffer_.free_data());
      stream_.avail_out = room;
      const size_t avail_in = stream_.avail_in;
      lzma_ret rc = lzma_code(&stream_, action);
      buffer_.Commit(room - stream_.avail_out);
      if (rc == LZMA_STREAM_END) return absl::OkStatus();
      if (rc != LZMA_OK) return LzmaError(xz_, "lzma_code", rc);
      if (action == LZMA_RUN && stream_.avail_in == 0 &&
          stream_.avail_out > 0) {
        return absl::OkStatus();
      }
      // The multi-threaded encoder gave up waiting for its workers.
      const bool idle = stream_.avail_in == avail_in && stream_.avail_out == room;
      if (idle && interrupted_ && interrupted_()) {
        return absl::CancelledError(
            absl::StrCat(xz_ ? "xz" : "lzma", " compression was interrupted"));
      }
    }
  }

  const bool xz_;
  const Interrupted interrupted_;
  lzma_stream stream_ = LZMA_STREAM_INIT;
  ChunkBuffer buffer_;
};

// One .lzma or .xz stream, decoded as its bytes arrive. No memory limit
// (as Python's default) and, for xz, no LZMA_CONCATENATED: decoding stops
// after one stream.
//
// Invariant: stream_ holds an initialized decoder iff init_ is LZMA_OK;
// between Feeds it holds no pointer into the caller's input.
class LzmaDecoder : public DecoderBase {
 public:
  explicit LzmaDecoder(bool xz) : xz_(xz) {
    init_ = xz ? lzma_stream_decoder(&stream_, UINT64_MAX, 0)
               : lzma_alone_decoder(&stream_, UINT64_MAX);
  }
  ~LzmaDecoder() override { lzma_end(&stream_); }

 private:
  absl::Status Step(absl::string_view input, ByteSink* out, size_t* used,
                    bool* end) override {
    if (init_ != LZMA_OK) return LzmaError(xz_, "decoder init", init_);
    if (input.empty()) {
      // Nothing is pending (Step never returns with a full buffer), and a
      // second call without progress would be LZMA_BUF_ERROR.
      *used = 0;
      *end = false;
      return absl::OkStatus();
    }
    stream_.next_in = reinterpret_cast<const uint8_t*>(input.data());
    stream_.avail_in = input.size();
    while (true) {
      size_t room = buffer_.free_size();
      stream_.next_out = reinterpret_cast<uint8_t*>(buffer_.free_data());
      stream_.avail_out = room;
      lzma_ret rc = lzma_code(&stream_, LZMA_RUN);
      buffer_.Commit(room - stream_.avail_out);
      if (rc == LZMA_STREAM_END) {
        *used = input.size() - stream_.avail_in;
        stream_.avail_in = 0;
        *end = true;
        return absl::OkStatus();
      }
      if (rc == LZMA_OK) {
        if (buffer_.full()) {
          absl::Status status = buffer_.FlushTo(out);
          if (!status.ok()) return status;
        } else if (stream_.avail_in == 0) {
          *used = input.size();
          *end = false;
          return absl::OkStatus();
        }
        continue;
      }
      switch (rc) {
        case LZMA_BUF_ERROR:
          // No progress with input and room available: cannot happen
          // while input remains; report it as the stream ending early.
          return TruncatedError(Name(xz_));
        case LZMA_FORMAT_ERROR:
        case LZMA_OPTIONS_ERROR:
        case LZMA_DATA_ERROR:
          return CorruptError(Name(xz_), stream_.total_in, LzmaRetName(rc));
        default:
          return LzmaError(xz_, "lzma_code", rc);
      }
    }
  }

  const bool xz_;
  lzma_stream stream_ = LZMA_STREAM_INIT;
  lzma_ret init_ = LZMA_OK;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSink>> NewLzmaEncoder(bool xz, int level,
                                                         int threads,
                                                         ByteSink* out,
                                                         Interrupted interrupted) {
  return LzmaEncoder::Create(xz, level, threads, out, std::move(interrupted));
}

std::unique_ptr<StreamDecoder> NewLzmaDecoder(bool xz) {
  return std::make_unique<LzmaDecoder>(xz);
}

}  // namespace codec_internal
}  // namespace persistd
