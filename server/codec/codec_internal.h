// Pieces shared by the codec implementations, and the per-codec factories
// that codec.cc dispatches to. Not part of the public interface: callers
// include server/codec/codec.h only.
#ifndef PERSISTD_SERVER_CODEC_CODEC_INTERNAL_H_
#define PERSISTD_SERVER_CODEC_CODEC_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/codec/codec.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace codec_internal {

// Size of the buffers between a library and a sink, in both directions.
inline constexpr size_t kChunkSize = size_t{1} << 20;

// The largest input handed to a library call whose length is 32-bit
// (zlib's uInt, bzip2's unsigned int).
inline constexpr size_t kMaxLibraryInput = size_t{1} << 30;

// ChunkBuffer is a fixed staging area of kChunkSize bytes: a library writes
// into the free tail, and FlushTo hands the filled head to a sink in one
// Append.
//
// Invariant: size_ <= kChunkSize, and data_[0, size_) holds bytes that have
// not been given to a sink yet.
class ChunkBuffer {
 public:
  ChunkBuffer() : data_(new char[kChunkSize]) {}
  ChunkBuffer(const ChunkBuffer&) = delete;
  ChunkBuffer& operator=(const ChunkBuffer&) = delete;

  char* free_data() { return data_.get() + size_; }
  size_t free_size() const { return kChunkSize - size_; }
  size_t size() const { return size_; }
  bool full() const { return size_ == kChunkSize; }

  // Marks `n` more bytes of the free tail as filled.
  // REQUIRES: n <= free_size().
  void Commit(size_t n) { size_ += n; }

  // Appends the filled bytes (if any) to `sink` and empties the buffer.
  absl::Status FlushTo(ByteSink* sink);

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
};

// Encoder is the state machine every encoder shares. Append and Finish fail
// with FailedPrecondition after Finish, and return the first error again
// after an error. Finish ends the stream (End) and then finishes `out`.
// Small appends (pickle opcodes) are gathered into one Compress call of up
// to kGatherSize bytes, so no library is called per opcode.
//
// Invariants: state_ == kFailed iff error_ is not OK; gathered_ holds less
// than kGatherSize bytes and they precede anything Compress has not seen.
class Encoder : public ByteSink {
 public:
  explicit Encoder(ByteSink* out) : out_(out) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  absl::Status Append(absl::string_view data) final;
  absl::Status Finish() final;

 protected:
  // Compresses `data`; compressed bytes may stay buffered. `data` is not
  // empty.
  virtual absl::Status Compress(absl::string_view data) = 0;
  // Writes everything still buffered and the trailer to out(); does not
  // call out()->Finish().
  virtual absl::Status End() = 0;

  ByteSink* out() const { return out_; }

 private:
  enum class State { kOpen, kFinished, kFailed };

  // Appends smaller than this are gathered.
  static constexpr size_t kSmallAppend = size_t{4} << 10;
  static constexpr size_t kGatherSize = size_t{64} << 10;

  absl::Status FlushGathered();
  absl::Status Fail(absl::Status status);

  ByteSink* const out_;
  State state_ = State::kOpen;
  absl::Status error_;
  std::string gathered_;
};

// The state machine every stream decoder shares: Feed fails with the first
// error again after an error, and with FailedPrecondition after the end of
// the stream; on the end, the output still in buffer_ is flushed.
//
// Invariant: fed_ is the number of input bytes consumed by earlier Feeds
// (decoders add the position inside the current input for error offsets).
class DecoderBase : public StreamDecoder {
 public:
  absl::Status Feed(absl::string_view input, ByteSink* out, size_t* used,
                    bool* done) final;

 protected:
  // Decodes `input` until it is used up (*end false, *used = input.size())
  // or the stream ends (*end true, *used = its bytes of `input`), flushing
  // buffer_ to `out` whenever it is full.
  virtual absl::Status Step(absl::string_view input, ByteSink* out,
                            size_t* used, bool* end) = 0;

  ChunkBuffer buffer_;
  uint64_t fed_ = 0;

 private:
  enum class State { kOpen, kDone, kFailed };
  State state_ = State::kOpen;
  absl::Status error_;
};

// Decode helpers: DataLoss errors with the house wording.
absl::Status TruncatedError(absl::string_view codec);
absl::Status CorruptError(absl::string_view codec, uint64_t offset,
                          absl::string_view detail);

// Per-codec encoder factories and stream decoders. The level is already
// validated and resolved (never -1). `gzip`/`xz` select the second format of
// a library. A decoder whose library fails to initialize reports that error
// from its first Feed.
absl::StatusOr<std::unique_ptr<ByteSink>> NewZlibEncoder(bool gzip, int level,
                                                         int threads,
                                                         ByteSink* out);
std::unique_ptr<StreamDecoder> NewZlibDecoder(bool gzip);

absl::StatusOr<std::unique_ptr<ByteSink>> NewBz2Encoder(int level,
                                                        ByteSink* out);
std::unique_ptr<StreamDecoder> NewBz2Decoder();

absl::StatusOr<std::unique_ptr<ByteSink>> NewLzmaEncoder(bool xz, int level,
                                                         int threads,
                                                         ByteSink* out,
                                                         Interrupted interrupted);
std::unique_ptr<StreamDecoder> NewLzmaDecoder(bool xz);

absl::StatusOr<std::unique_ptr<ByteSink>> NewLz4Encoder(int level,
                                                        int threads,
                                                        ByteSink* out);
std::unique_ptr<StreamDecoder> NewLz4Decoder();

absl::StatusOr<std::unique_ptr<ByteSink>> NewZstdEncoder(int level,
                                                         int threads,
                                                         ByteSink* out);
std::unique_ptr<StreamDecoder> NewZstdDecoder();

}  // namespace codec_internal
}  // namespace persistd

#endif  // PERSISTD_SERVER_CODEC_CODEC_INTERNAL_H_
