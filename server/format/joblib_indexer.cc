#include "server/format/joblib_indexer.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/pickle/pickle_opcodes.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.

constexpr absl::string_view kCallMaterialize = "c__persistd__\nmaterialize\n(";
constexpr absl::string_view kTupleReduce = "tR";

// Opcodes of protocols 0 and 1, which a pickle without PROTO starts with.
bool IsProtocol01Opcode(uint8_t code) {
  static constexpr char kOps[] = "IJKMLSTUNVXF]ael)t}dsu02(1ghjpqrcRbio.PQG";
  return code != 0 && std::memchr(kOps, code, sizeof(kOps) - 1) != nullptr;
}

absl::Status InObjectStream(const absl::Status& status, uint64_t start) {
  return absl::DataLossError(absl::StrCat(
      status.message(), " (in the object array stream that starts at offset ",
      start, ")"));
}

}  // namespace

absl::Status ArrayDataPastEnd(uint64_t build_end) {
  return absl::DataLossError(absl::StrFormat(
      "array data runs past the end of the file (truncated?): the array "
      "after offset %d",
      build_end));
}

absl::Status CheckPickleStart(absl::string_view prefix) {
  if (prefix.empty()) return absl::OkStatus();
  const uint8_t first = static_cast<uint8_t>(prefix[0]);
  if (first == kProto) {
    if (prefix.size() >= 2 &&
        static_cast<uint8_t>(prefix[1]) > kHighestProtocol) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "not a pickle or joblib file: unsupported pickle protocol %d",
          static_cast<uint8_t>(prefix[1])));
    }
  } else if (!IsProtocol01Opcode(first)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a pickle or joblib file: starts with byte 0x%02x", first));
  }
  return absl::OkStatus();
}

JoblibIndexer::JoblibIndexer(const PickleLimits& limits, Listener* listener)
    : limits_(limits),
      listener_(listener),
      budget_(limits.max_index_memory),
      stack_(&budget_) {}

absl::Status JoblibIndexer::Fail(absl::Status status) {
  error_ = status;
  return status;
}

absl::Status JoblibIndexer::Feed(absl::string_view bytes) {
  if (!error_.ok()) return error_;
  if (finished_ || whole_.data() != nullptr) {
    return Fail(absl::FailedPreconditionError(
        "JoblibIndexer: Feed after Finish or FeedWhole"));
  }
  while (!bytes.empty() && step_ != Step::kStopped) {
    if (step_ == Step::kData && received_ < data_end_) {
      // The rest of an array's data: on to the listener, never copied
      // (delivered_ == received_ here).
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(bytes.size(),
                                                 data_end_ - received_));
      if (listener_ != nullptr) {
        absl::Status status = listener_->OnBytes(received_, bytes.substr(0, n));
        if (!status.ok()) return Fail(status);
      }
      received_ += n;
      delivered_ = received_;
      data_bytes_ += n;
      bytes.remove_prefix(n);
      continue;
    }
    // Pickle bytes, or bytes not classified yet: kept, a slice at a time.
    const size_t n = std::min(bytes.size(), kSlice);
    absl::Status status = buffer_.WriteAt(received_, bytes.substr(0, n));
    if (!status.ok()) return Fail(status);
    received_ += n;
    bytes.remove_prefix(n);
    if (received_ >= retry_at_) {
      status = Advance();
      if (!status.ok()) return Fail(status);
    }
    status = CheckPicklePart();
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status JoblibIndexer::CheckPicklePart() {
  // Bytes after the STOP are not part of it, unless the STOP's frame holds
  // them: a frame is read whole, so they come in with it however it is cut.
  auto part_end = [this] {
    if (!stopped()) return received_;
    return scanner_.InFrame() ? scanner_.opcode_limit() : end_offset_;
  };
  uint64_t end = part_end();
  if (end - data_bytes_ > limits_.max_pickle_bytes && received_ < retry_at_) {
    // Bytes put off until a long opcode's retry may be array data, or come
    // after the STOP: look at them before refusing, as FeedWhole would.
    absl::Status status = Advance();
    if (!status.ok()) return Fail(status);
    end = part_end();
  }
  if (end - data_bytes_ > limits_.max_pickle_bytes) {
    return Fail(PickleBytesExceeded(limits_.max_pickle_bytes, end));
  }
  return absl::OkStatus();
}

absl::Status JoblibIndexer::FeedWhole(absl::string_view stream) {
  if (received_ != 0 || finished_ || !error_.ok()) {
    return Fail(absl::FailedPreconditionError(
        "JoblibIndexer: FeedWhole after other bytes"));
  }
  if (stream.empty()) return absl::OkStatus();
  whole_ = stream;
  received_ = stream.size();
  absl::Status status = Advance();
  if (!status.ok()) return Fail(status);
  return CheckPicklePart();
}

absl::Status JoblibIndexer::Settle() {
  if (!error_.ok() || finished_ || step_ == Step::kStopped) return error_;
  absl::Status status = Advance();
  if (!status.ok()) return Fail(status);
  return absl::OkStatus();
}

absl::Status JoblibIndexer::Deliver(uint64_t end, bool data) {
  end = std::min(end, received_);
  if (end <= delivered_) return absl::OkStatus();
  if (listener_ != nullptr) {
    absl::Status status = listener_->OnBytes(
        delivered_, buffered().substr(delivered_, end - delivered_));
    if (!status.ok()) return status;
  }
  if (data) {
    if (whole_.data() == nullptr) buffer_.Release(delivered_, end);
    data_bytes_ += end - delivered_;
  }
  delivered_ = end;
  return absl::OkStatus();
}

absl::Status JoblibIndexer::Advance() {
  // Bytes that skipped the buffer read as zeros: only pickle bytes are read.
  absl::Status status;
  if (whole_.data() == nullptr) {
    status = buffer_.Reserve(received_);
    if (!status.ok()) return status;
  }
  scanner_.Rebase(buffered());
  if (nested_) nested_->Rebase(buffered());
  retry_at_ = 0;
  while (retry_at_ == 0) {
    switch (step_) {
      case Step::kStart:
        status = CheckPickleStart(buffered());
        if (!status.ok()) return status;
        if (received_ < 2) {
          retry_at_ = received_ + 1;  // the protocol may follow
        } else {
          step_ = Step::kPickle;
        }
        break;
      case Step::kPickle:
        status = Pickle();
        break;
      case Step::kObjectStream:
        status = ObjectStream();
        break;
      case Step::kPadding:
        status = Padding();
        break;
      case Step::kData:
        status = Deliver(data_end_, /*data=*/true);
        if (!status.ok()) return status;
        if (data_end_ > received_) return absl::OkStatus();  // Feed passes it
        scanner_.Seek(data_end_);
        step_ = Step::kPickle;
        break;
      case Step::kStopped:
        return absl::OkStatus();
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status JoblibIndexer::Pickle() {
  PickleOp op;
  SymbolicStack::Event event;
  absl::Status status = stack_.Run(&scanner_, &op, &event);
  if (!status.ok()) {
    if (!scanner_.truncated()) return status;
    // Wait until the opcode's bytes seen have doubled.
    truncated_ = status;
    retry_at_ =
        received_ + std::max<uint64_t>(received_ - scanner_.position(), 1);
    return Deliver(scanner_.position(), false);
  }
  if (event == SymbolicStack::Event::kStop) {
    end_offset_ = op.end();
    step_ = Step::kStopped;
    return Deliver(end_offset_, false);
  }
  // The stack, the edits and the arrays share one budget (a FRAME costs an
  // edit, a wrapper three edits and an array).
  auto over = [this](uint64_t offset) {
    return IndexMemoryExceeded(budget_.limit(), "the list of arrays and edits",
                               offset);
  };
  if (!ReserveCharged(&budget_, &edits_, edits_.size() + 3)) {
    return over(op.offset);
  }
  if (event == SymbolicStack::Event::kFrame) {
    edits_.push_back({op.offset, Edit::kRemove, op.end(), {}});
    return absl::OkStatus();
  }
  const WrapperBuild& build = stack_.build();
  if (!ReserveCharged(&budget_, &arrays_, arrays_.size() + 1) ||
      !budget_.TryCharge(build.layout.shape.size() * sizeof(uint64_t))) {
    return over(op.offset);
  }
  edits_.push_back(
      {build.start_offset, Edit::kInsertBeforeWrapper, 0, kCallMaterialize});
  edits_.push_back({op.end(), Edit::kInsertAfterBuild, 0, kTupleReduce});
  status = Deliver(op.end(), false);
  if (!status.ok()) return status;
  build_end_ = op.end();
  current_ = LoadArrayLocation();
  current_.kind = LoadArrayLocation::Kind::kLegacy;
  current_.offset = build_end_;
  if (build.klass != WrapperClass::kNumpyArrayWrapper) {
    return AddArray(std::move(current_), build_end_);
  }
  // joblib's unpickler reads the data from where its frame ends.
  if (scanner_.InFrame()) {
    return PickleCorrupt(
        "the frame does not end at the NumpyArrayWrapper's BUILD", op.offset);
  }
  layout_ = build.layout;
  // What the state says passes from the wrapper layer unchanged.
  static_cast<ArrayMeta&>(current_) = layout_;
  if (layout_.object) {
    // A complete nested pickle (joblib: pickle.dump(array, protocol=5)).
    nested_.emplace(scanner_.data(), build_end_);
    step_ = Step::kObjectStream;
    return absl::OkStatus();
  }
  if (layout_.padded) {
    step_ = Step::kPadding;
    return absl::OkStatus();
  }
  return StartData(build_end_);
}

absl::Status JoblibIndexer::ObjectStream() {
  PickleOp inner;
  absl::Status status = nested_->Next(&inner);
  if (!status.ok()) {
    if (!nested_->truncated()) return InObjectStream(status, build_end_);
    truncated_ = InObjectStream(status, build_end_);
    retry_at_ =
        received_ + std::max<uint64_t>(received_ - nested_->position(), 1);
    return Deliver(nested_->position(), false);
  }
  if (inner.code != kStop) return absl::OkStatus();
  status = Deliver(inner.end(), false);
  if (!status.ok()) return status;
  current_.kind = LoadArrayLocation::Kind::kObjectStream;
  current_.offset = build_end_;
  current_.length = inner.end() - build_end_;
  current_.padded = false;
  scanner_.Seek(inner.end());
  nested_.reset();
  step_ = Step::kPickle;
  return AddArray(std::move(current_), inner.end());
}

absl::Status JoblibIndexer::Padding() {
  const absl::string_view stream = buffered();
  const uint64_t pos = build_end_;
  if (pos >= received_) {
    retry_at_ = received_ + 1;
    return absl::OkStatus();
  }
  const uint8_t pad = static_cast<uint8_t>(stream[pos]);
  if (pad < 1 || pad > layout_.alignment) {
    return absl::DataLossError(absl::StrFormat(
        "invalid array padding length %d at offset %d", pad, pos));
  }
  if (pad > received_ - pos - 1) {
    retry_at_ = pos + 1 + pad;
    return absl::OkStatus();
  }
  for (uint64_t i = pos + 1; i <= pos + pad; ++i) {
    if (static_cast<uint8_t>(stream[i]) != 0xff) {
      return absl::DataLossError(
          absl::StrFormat("invalid array padding byte at offset %d", i));
    }
  }
  absl::Status status = Deliver(pos + 1 + pad, false);
  if (!status.ok()) return status;
  return StartData(pos + 1 + pad);
}

absl::Status JoblibIndexer::StartData(uint64_t start) {
  if (layout_.too_large || layout_.nbytes > UINT64_MAX - start) {
    return ArrayDataPastEnd(build_end_);
  }
  current_.kind = LoadArrayLocation::Kind::kRaw;
  current_.offset = start;
  current_.length = layout_.nbytes;
  current_.padded = layout_.padded;
  data_end_ = start + layout_.nbytes;
  step_ = Step::kData;
  return AddArray(std::move(current_), data_end_);
}

absl::Status JoblibIndexer::AddArray(LoadArrayLocation array,
                                     uint64_t data_end) {
  if (data_end > build_end_) {
    edits_.push_back({build_end_, Edit::kRemove, data_end, {}});
  }
  arrays_.push_back(std::move(array));  // room was made at the BUILD
  current_ = LoadArrayLocation();
  if (listener_ == nullptr) return absl::OkStatus();
  return listener_->OnArray(arrays_.back());
}

absl::StatusOr<IndexedStream> JoblibIndexer::Finish() {
  if (!error_.ok()) return error_;
  if (finished_) {
    return absl::FailedPreconditionError("JoblibIndexer: Finish called twice");
  }
  finished_ = true;
  if (received_ == 0) {
    return Fail(absl::InvalidArgumentError(
        "not a pickle or joblib file: the stream is empty"));
  }
  if (step_ != Step::kStopped) {
    // Look at what was put off: a lone first byte, an opcode to retry.
    if (step_ == Step::kStart) step_ = Step::kPickle;
    absl::Status status = Advance();
    if (!status.ok()) return Fail(status);
  }
  switch (step_) {
    case Step::kStopped:
      break;
    case Step::kPadding:
    case Step::kData:
      return Fail(ArrayDataPastEnd(build_end_));
    default:
      return Fail(truncated_.ok() ? PickleTruncated(received_) : truncated_);
  }

  IndexedStream result;
  result.end_offset = end_offset_;
  std::stable_sort(edits_.begin(), edits_.end(),
                   [](const Edit& x, const Edit& y) {
                     return x.offset != y.offset ? x.offset < y.offset
                                                 : x.order < y.order;
                   });
  uint64_t skeleton_size = end_offset_;
  for (const Edit& edit : edits_) {
    skeleton_size += edit.text.size();
    if (edit.order == Edit::kRemove) skeleton_size -= edit.end - edit.offset;
  }
  if (skeleton_size > limits_.max_pickle_bytes) {
    return Fail(PickleBytesExceeded(limits_.max_pickle_bytes, end_offset_));
  }
  const absl::string_view stream = buffered();
  result.skeleton.reserve(skeleton_size);
  uint64_t cursor = 0;
  for (const Edit& edit : edits_) {
    if (edit.offset < cursor) {  // cannot happen: edits never overlap
      return Fail(absl::InternalError("overlapping edits while indexing"));
    }
    result.skeleton.append(stream.data() + cursor, edit.offset - cursor);
    if (edit.order == Edit::kRemove) {
      cursor = edit.end;
    } else {
      result.skeleton.append(edit.text.data(), edit.text.size());
      cursor = edit.offset;
    }
  }
  result.skeleton.append(stream.data() + cursor, end_offset_ - cursor);

  // Paths are spare memory too: one that does not fit reads kUnknownPath.
  for (size_t i = 0; i < arrays_.size(); ++i) {
    std::string path = stack_.paths().PathOf(i, stream);
    arrays_[i].path = budget_.TryChargeSpare(path.size()) ? std::move(path)
                                                          : kUnknownPath;
  }
  result.arrays = std::move(arrays_);
  return result;
}

}  // namespace persistd
