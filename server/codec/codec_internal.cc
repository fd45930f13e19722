#include "server/codec/codec_internal.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace persistd {
namespace codec_internal {

absl::Status ChunkBuffer::FlushTo(ByteSink* sink) {
  if (size_ == 0) return absl::OkStatus();
  absl::Status status = sink->Append(absl::string_view(data_.get(), size_));
  size_ = 0;
  return status;
}

absl::Status Encoder::Append(absl::string_view data) {
  if (state_ == State::kFailed) return error_;
  if (state_ == State::kFinished) {
    return absl::FailedPreconditionError("Append after Finish on an encoder");
  }
  if (data.empty()) return absl::OkStatus();
  if (data.size() < kSmallAppend) {
    if (gathered_.size() + data.size() > kGatherSize) {
      absl::Status status = FlushGathered();
      if (!status.ok()) return Fail(std::move(status));
    }
    if (gathered_.capacity() < kGatherSize) gathered_.reserve(kGatherSize);
    gathered_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status status = FlushGathered();
  if (status.ok()) status = Compress(data);
  return Fail(std::move(status));
}

absl::Status Encoder::Finish() {
  if (state_ == State::kFailed) return error_;
  if (state_ == State::kFinished) {
    return absl::FailedPreconditionError("Finish called twice on an encoder");
  }
  absl::Status status = FlushGathered();
  if (status.ok()) status = End();
  if (status.ok()) status = out_->Finish();
  if (!status.ok()) return Fail(std::move(status));
  state_ = State::kFinished;
  return absl::OkStatus();
}

absl::Status Encoder::FlushGathered() {
  if (gathered_.empty()) return absl::OkStatus();
  absl::Status status = Compress(gathered_);
  gathered_.clear();
  return status;
}

absl::Status Encoder::Fail(absl::Status status) {
  if (!status.ok()) {
    state_ = State::kFailed;
    error_ = status;
  }
  return status;
}

absl::Status DecoderBase::Feed(absl::string_view input, ByteSink* out,
                               size_t* used, bool* done) {
  if (state_ == State::kFailed) return error_;
  if (state_ == State::kDone) {
    return absl::FailedPreconditionError(
        "Feed after the end of the compressed stream");
  }
  size_t n = 0;
  bool end = false;
  absl::Status status = Step(input, out, &n, &end);
  if (status.ok() && end) status = buffer_.FlushTo(out);
  if (!status.ok()) {
    state_ = State::kFailed;
    error_ = status;
    return status;
  }
  fed_ += n;
  if (end) state_ = State::kDone;
  *used = n;
  *done = end;
  return absl::OkStatus();
}

absl::Status TruncatedError(absl::string_view codec) {
  return absl::DataLossError(absl::StrCat(
      codec, " stream is truncated (file ends before the end mark)"));
}

absl::Status CorruptError(absl::string_view codec, uint64_t offset,
                          absl::string_view detail) {
  return absl::DataLossError(absl::StrCat(codec, " stream is corrupt near byte ",
                                          offset, ": ", detail));
}

}  // namespace codec_internal
}  // namespace persistd
