// bzip2 streams, as Python's bz2.BZ2File writes them:
// BZ2_bzCompressInit(blockSize100k = level, verbosity 0, workFactor 0).
#include <bzlib.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/codec/codec_internal.h"

namespace persistd {
namespace codec_internal {
namespace {

constexpr absl::string_view kName = "bz2";

absl::Status Bz2Error(absl::string_view what, int rc) {
  std::string message = absl::StrCat("bz2 ", what, " failed (", rc, ")");
  if (rc == BZ_MEM_ERROR) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

uint64_t TotalIn(const bz_stream& stream) {
  return (static_cast<uint64_t>(stream.total_in_hi32) << 32) |
         stream.total_in_lo32;
}

// Invariant: stream_ is an initialized compression stream from Create to
// destruction.
class Bz2Encoder : public Encoder {
 public:
  static absl::StatusOr<std::unique_ptr<ByteSink>> Create(int level,
                                                          ByteSink* out) {
    std::unique_ptr<Bz2Encoder> encoder(new Bz2Encoder(out));
    int rc = BZ2_bzCompressInit(&encoder->stream_, level, 0, 0);
    if (rc != BZ_OK) return Bz2Error("BZ2_bzCompressInit", rc);
    encoder->initialized_ = true;
    return std::unique_ptr<ByteSink>(std::move(encoder));
  }

  ~Bz2Encoder() override {
    if (initialized_) BZ2_bzCompressEnd(&stream_);
  }

 private:
  explicit Bz2Encoder(ByteSink* out) : Encoder(out) {}

  absl::Status Compress(absl::string_view data) override {
    while (!data.empty()) {
      size_t n = std::min(data.size(), kMaxLibraryInput);
      stream_.next_in = const_cast<char*>(data.data());
      stream_.avail_in = static_cast<unsigned>(n);
      data.remove_prefix(n);
      absl::Status status = Run(BZ_RUN);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  absl::Status End() override {
    absl::Status status = Run(BZ_FINISH);
    if (!status.ok()) return status;
    return buffer_.FlushTo(out());
  }

  // Runs BZ2_bzCompress until the input is used up (BZ_RUN) or the stream
  // is ended (BZ_FINISH).
  absl::Status Run(int action) {
    while (true) {
      if (buffer_.full()) {
        absl::Status status = buffer_.FlushTo(out());
        if (!status.ok()) return status;
      }
      size_t room = buffer_.free_size();
      stream_.next_out = buffer_.free_data();
      stream_.avail_out = static_cast<unsigned>(room);
      int rc = BZ2_bzCompress(&stream_, action);
      buffer_.Commit(room - stream_.avail_out);
      if (rc == BZ_STREAM_END) return absl::OkStatus();
      if (rc != BZ_RUN_OK && rc != BZ_FINISH_OK) {
        return Bz2Error("BZ2_bzCompress", rc);
      }
      if (action == BZ_RUN && stream_.avail_in == 0) return absl::OkStatus();
    }
  }

  bz_stream stream_{};
  bool initialized_ = false;
  ChunkBuffer buffer_;
};

// One bzip2 stream, decompressed as its bytes arrive.
//
// Invariant: stream_ is an initialized decompression stream iff init_ is
// BZ_OK; between Feeds it holds no pointer into the caller's input.
class Bz2Decoder : public DecoderBase {
 public:
  Bz2Decoder() { init_ = BZ2_bzDecompressInit(&stream_, 0, 0); }
  ~Bz2Decoder() override {
    if (init_ == BZ_OK) BZ2_bzDecompressEnd(&stream_);
  }

 private:
  absl::Status Step(absl::string_view input, ByteSink* out, size_t* used,
                    bool* end) override {
    if (init_ != BZ_OK) return Bz2Error("BZ2_bzDecompressInit", init_);
    size_t given = 0;
    while (true) {
      if (stream_.avail_in == 0 && given < input.size()) {
        size_t n = std::min(input.size() - given, kMaxLibraryInput);
        stream_.next_in = const_cast<char*>(input.data() + given);
        stream_.avail_in = static_cast<unsigned>(n);
        given += n;
      }
      size_t room = buffer_.free_size();
      stream_.next_out = buffer_.free_data();
      stream_.avail_out = static_cast<unsigned>(room);
      int rc = BZ2_bzDecompress(&stream_);
      buffer_.Commit(room - stream_.avail_out);
      switch (rc) {
        case BZ_STREAM_END:
          *used = given - stream_.avail_in;
          stream_.avail_in = 0;
          *end = true;
          return absl::OkStatus();
        case BZ_OK:
          break;
        case BZ_DATA_ERROR_MAGIC:
          return CorruptError(kName, TotalIn(stream_),
                              "bad magic (not a bzip2 stream)");
        case BZ_DATA_ERROR:
          return CorruptError(kName, TotalIn(stream_),
                              "data integrity error (bad block or CRC)");
        default:
          return Bz2Error("BZ2_bzDecompress", rc);
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

  bz_stream stream_{};
  int init_ = BZ_OK;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ByteSink>> NewBz2Encoder(int level,
                                                        ByteSink* out) {
  return Bz2Encoder::Create(level, out);
}

std::unique_ptr<StreamDecoder> NewBz2Decoder() {
  return std::make_unique<Bz2Decoder>();
}

}  // namespace codec_internal
}  // namespace persistd
