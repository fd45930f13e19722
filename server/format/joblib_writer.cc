#include "server/format/joblib_writer.h"

#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/symbolic_stack.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.

// pickle._Framer's constants.
constexpr uint64_t kFrameSizeTarget = 64 * 1024;
constexpr uint64_t kFrameSizeMin = 4;

// The NumpyArrayWrapper instance, before its state, as pickle._Pickler
// writes it without memo opcodes.
constexpr absl::string_view kWrapperProto4 =
    "\x8c\x13" "joblib.numpy_pickle" "\x8c\x11" "NumpyArrayWrapper" "\x93" ")"
    "\x81";
constexpr absl::string_view kWrapperProto2 =
    "c" "joblib.numpy_pickle\nNumpyArrayWrapper\n" ")" "\x81";
constexpr absl::string_view kWrapperProto0 =
    "c" "copy_reg\n_reconstructor\n" "(" "c" "joblib.numpy_pickle\n"
    "NumpyArrayWrapper\n" "c" "__builtin__\nobject\n" "N" "t" "R";
constexpr absl::string_view kBuildOp = "b";

// Collects opcodes into frames like pickle._Framer and writes them to a
// ByteSink. Without framing (protocol < 4) it only batches small writes.
//
// Invariant: pieces_ are the pending opcodes in order, pending_ their total
// size, and written_ the number of bytes handed to out_. Pieces are views
// into buffers that outlive the FramedOutput; nothing is copied.
class FramedOutput {
 public:
  FramedOutput(ByteSink* out, bool framing) : out_(out), framing_(framing) {}

  // Adds opcodes to the current frame; commits it once it reaches 64 KiB.
  absl::Status Add(absl::string_view bytes) {
    if (bytes.empty()) return absl::OkStatus();
    if (!pieces_.empty() &&
        pieces_.back().data() + pieces_.back().size() == bytes.data()) {
      pieces_.back() = absl::string_view(pieces_.back().data(),
                                         pieces_.back().size() + bytes.size());
    } else {
      pieces_.push_back(bytes);
    }
    pending_ += bytes.size();
    return pending_ >= kFrameSizeTarget ? Commit() : absl::OkStatus();
  }

  // Ends the current frame, then writes `bytes` outside any frame.
  absl::Status AddBare(absl::string_view bytes) {
    absl::Status status = Commit();
    if (!status.ok() || bytes.empty()) return status;
    written_ += bytes.size();
    return out_->Append(bytes);
  }

  // Ends the current frame, then leaves `size` bytes for the caller.
  absl::Status AddHole(uint64_t size) {
    absl::Status status = Commit();
    if (!status.ok() || size == 0) return status;
    written_ += size;
    return out_->Skip(size);
  }

  // Ends the current frame: a FRAME header if it has >= 4 bytes, then it.
  absl::Status Commit() {
    if (pending_ == 0) return absl::OkStatus();
    if (framing_ && pending_ >= kFrameSizeMin) {
      char header[9];
      header[0] = static_cast<char>(kFrame);
      for (int i = 0; i < 8; ++i) {
        header[1 + i] = static_cast<char>((pending_ >> (8 * i)) & 0xff);
      }
      absl::Status status = out_->Append(absl::string_view(header, 9));
      if (!status.ok()) return status;
      written_ += 9;
    }
    for (absl::string_view piece : pieces_) {
      absl::Status status = out_->Append(piece);
      if (!status.ok()) return status;
    }
    written_ += pending_;
    pieces_.clear();
    pending_ = 0;
    return absl::OkStatus();
  }

  // Stream offset of the next byte; exact after Commit().
  uint64_t position() const { return written_ + pending_; }

 private:
  ByteSink* out_;
  bool framing_;
  std::vector<absl::string_view> pieces_;
  uint64_t pending_ = 0;
  uint64_t written_ = 0;
};

// A validated DumpArraySpec.
struct PreparedArray {
  std::vector<absl::string_view> state_body;  // dict opcodes, no PROTO/STOP
  ArrayLayout layout;
};

// The protocol a pickle declares: its leading PROTO's, else 1 (which stands
// for 0 or 1: both write the same wrapper).
int DeclaredProtocol(absl::string_view pickle) {
  if (pickle.size() >= 2 && static_cast<uint8_t>(pickle[0]) == kProto) {
    return static_cast<uint8_t>(pickle[1]);
  }
  return 1;
}

bool IsMemoOrBufferOp(uint8_t code) {
  switch (code) {
    case kPut: case kBinPut: case kLongBinPut: case kMemoize:
    case kGet: case kBinGet: case kLongBinGet:
    case kPersId: case kBinPersId: case kNextBuffer: case kReadOnlyBuffer:
      return true;
    default:
      return false;
  }
}

absl::Status Invalid(size_t array, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("array ", array, ": ", what));
}

// Checks that `data` is exactly one complete pickle.
absl::Status CheckNestedPickle(absl::string_view data) {
  PickleScanner scanner(data);
  PickleOp op;
  do {
    absl::Status status = scanner.Next(&op);
    if (!status.ok()) return status;
  } while (op.code != kStop);
  if (!scanner.AtEnd()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d bytes follow its STOP", data.size() - scanner.position()));
  }
  return absl::OkStatus();
}

absl::Status PrepareArray(size_t k, const DumpArraySpec& spec, int protocol,
                          PreparedArray* prepared) {
  const absl::string_view state = spec.state_pickle;
  if (DeclaredProtocol(state) != protocol) {
    return Invalid(k, absl::StrFormat(
                          "state pickle has protocol %d, the skeleton %d",
                          DeclaredProtocol(state), protocol));
  }
  PickleScanner scanner(state);
  SymbolicStack stack;
  PickleOp op;
  SymbolicStack::Event event = SymbolicStack::Event::kNone;
  while (event != SymbolicStack::Event::kStop) {
    absl::Status status = scanner.Next(&op);
    if (status.ok()) status = stack.Apply(op, &event);
    if (!status.ok()) {
      return Invalid(k, absl::StrCat("state pickle: ", status.message()));
    }
    if (IsMemoOrBufferOp(op.code)) {
      return Invalid(k, absl::StrFormat(
                            "state pickle uses opcode 0x%02x at offset %d; "
                            "pickle it with Pickler.fast = True and no "
                            "persistent ids",
                            op.code, op.offset));
    }
    if (event == SymbolicStack::Event::kWrapperBuild) {
      return Invalid(k, "state pickle contains an array wrapper");
    }
    if (op.code == kProto || op.code == kFrame || op.code == kStop) continue;
    absl::string_view bytes(state.data() + op.offset, op.length);
    std::vector<absl::string_view>& body = prepared->state_body;
    if (!body.empty() && body.back().data() + body.back().size() == bytes.data()) {
      body.back() = absl::string_view(body.back().data(),
                                      body.back().size() + bytes.size());
    } else {
      body.push_back(bytes);
    }
  }
  if (!scanner.AtEnd()) return Invalid(k, "state pickle has bytes after STOP");
  // STOP took the dict. Anything still below it (an item, a MARK) would
  // stay in the output between the wrapper and its BUILD, which would then
  // build that instead of the wrapper: only a POP on an empty stack fails.
  PickleOp pop;
  pop.code = kPop;
  pop.offset = op.offset;
  if (stack.Apply(pop, &event).ok()) {
    return Invalid(k, "state pickle leaves more than the dict on the stack");
  }
  absl::Status status =
      stack.LayoutFromState(stack.stopped(), op.offset, &prepared->layout);
  if (!status.ok()) {
    return Invalid(k, absl::StrCat("state pickle: ", status.message()));
  }
  const ArrayLayout& layout = prepared->layout;
  if (spec.kind == DumpArraySpec::Kind::kObjectStream) {
    if (!layout.object) {
      return Invalid(k, "object stream given for a dtype without objects");
    }
    status = CheckNestedPickle(spec.data);
    if (!status.ok()) {
      return Invalid(k, absl::StrCat("object stream: ", status.message()));
    }
    return absl::OkStatus();
  }
  if (layout.object) return Invalid(k, "raw data given for an object dtype");
  if (layout.too_large || layout.nbytes != spec.data_size()) {
    return Invalid(k, absl::StrFormat(
                          "%d data bytes, but shape and dtype need %s",
                          spec.data_size(),
                          layout.too_large ? "more than 2**64"
                                           : absl::StrCat(layout.nbytes)));
  }
  if (layout.padded && layout.alignment != 16) {
    return Invalid(k, absl::StrFormat(
                          "numpy_array_alignment_bytes is %d, not 16",
                          layout.alignment));
  }
  return absl::OkStatus();
}

// The skeleton cut into what the writer emits.
struct Piece {
  enum Type { kRun, kBare, kArray };
  Type type;
  absl::string_view bytes;  // kRun, kBare
  size_t array = 0;         // kArray
};

bool IsIntPush(uint8_t code) {
  switch (code) {
    case kBinInt1: case kBinInt2: case kBinInt: case kLong1: case kLong4:
    case kInt: case kLong:
      return true;
    default:
      return false;
  }
}

absl::Status PlanSkeleton(absl::string_view skeleton, size_t array_count,
                          int* protocol, std::vector<Piece>* plan,
                          std::vector<bool>* referenced) {
  auto invalid = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("skeleton: ", what));
  };
  *protocol = DeclaredProtocol(skeleton);
  if (*protocol > kHighestProtocol) {
    return invalid(absl::StrCat("unsupported pickle protocol ", *protocol));
  }
  PickleScanner scanner(skeleton);
  PickleOp op;
  bool run_broken = true;  // the next run opcode starts a new piece
  // The int pushed just before (the persistent id of a BINPERSID).
  bool int_pending = false;
  int64_t int_value = 0;
  size_t int_piece = 0;
  uint64_t int_length = 0;
  auto add_array = [&](int64_t index, uint64_t offset) {
    if (index < 0 || static_cast<uint64_t>(index) >= array_count) {
      return invalid(absl::StrFormat(
          "persistent id %d at offset %d is not an index into the %d arrays",
          index, offset, array_count));
    }
    (*referenced)[index] = true;
    plan->push_back(Piece{Piece::kArray, {}, static_cast<size_t>(index)});
    run_broken = true;
    return absl::OkStatus();
  };
  do {
    absl::Status status = scanner.Next(&op);
    if (!status.ok()) return invalid(status.message());
    const absl::string_view bytes(skeleton.data() + op.offset, op.length);
    if (op.code == kFrame) {  // dropped; the output is re-framed
      run_broken = true;
      continue;
    }
    const bool was_int_pending = int_pending;
    int_pending = false;
    if (op.code == kBinPersId) {
      if (!was_int_pending) {
        return invalid(absl::StrFormat(
            "the persistent id at offset %d is not an int", op.offset));
      }
      Piece& piece = (*plan)[int_piece];
      piece.bytes.remove_suffix(int_length);
      status = add_array(int_value, op.offset);
      if (!status.ok()) return status;
      continue;
    }
    if (op.code == kPersId) {
      int64_t index = -1;
      if (!absl::SimpleAtoi(op.arg, &index)) {
        return invalid(absl::StrFormat(
            "the persistent id at offset %d is not an int", op.offset));
      }
      status = add_array(index, op.offset);
      if (!status.ok()) return status;
      continue;
    }
    if ((op.code == kProto && op.offset == 0) || op.length >= kFrameSizeTarget) {
      plan->push_back(Piece{Piece::kBare, bytes});
      run_broken = true;
    } else if (!run_broken && !plan->empty() &&
               plan->back().bytes.size() < kFrameSizeTarget &&
               plan->back().bytes.data() + plan->back().bytes.size() ==
                   bytes.data()) {
      plan->back().bytes = absl::string_view(
          plan->back().bytes.data(), plan->back().bytes.size() + bytes.size());
    } else {
      plan->push_back(Piece{Piece::kRun, bytes});
      run_broken = false;
    }
    if (IsIntPush(op.code) && op.has_int) {
      int_pending = true;
      int_value = op.int_value;
      int_piece = plan->size() - 1;
      int_length = op.length;
    }
  } while (op.code != kStop);
  if (!scanner.AtEnd()) {
    return invalid(absl::StrFormat("%d bytes follow the STOP at offset %d",
                                   skeleton.size() - scanner.position(),
                                   op.offset));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> WriteJoblibStream(
    absl::string_view skeleton, const std::vector<DumpArraySpec>& arrays,
    ByteSink* out, std::vector<uint64_t>* external_offsets) {
  int protocol = 0;
  std::vector<Piece> plan;
  std::vector<bool> referenced(arrays.size(), false);
  absl::Status status =
      PlanSkeleton(skeleton, arrays.size(), &protocol, &plan, &referenced);
  if (!status.ok()) return status;
  std::vector<PreparedArray> prepared(arrays.size());
  for (size_t k = 0; k < arrays.size(); ++k) {
    if (!referenced[k]) return Invalid(k, "no persistent id refers to it");
    status = PrepareArray(k, arrays[k], protocol, &prepared[k]);
    if (!status.ok()) return status;
  }

  const absl::string_view wrapper = protocol >= 4   ? kWrapperProto4
                                    : protocol >= 2 ? kWrapperProto2
                                                    : kWrapperProto0;
  FramedOutput output(out, protocol >= 4);
  for (const Piece& piece : plan) {
    switch (piece.type) {
      case Piece::kRun:
        status = output.Add(piece.bytes);
        break;
      case Piece::kBare:
        status = output.AddBare(piece.bytes);
        break;
      case Piece::kArray: {
        const DumpArraySpec& spec = arrays[piece.array];
        const PreparedArray& array = prepared[piece.array];
        status = output.Add(wrapper);
        for (absl::string_view bytes : array.state_body) {
          if (status.ok()) status = output.Add(bytes);
        }
        if (status.ok()) status = output.Add(kBuildOp);
        // joblib's reader takes the data from right after BUILD, so the
        // frame ends there.
        if (status.ok()) status = output.Commit();
        const bool raw = spec.kind != DumpArraySpec::Kind::kObjectStream;
        if (status.ok() && raw && array.layout.padded) {
          const uint64_t align = array.layout.alignment;
          const uint64_t pad = align - (output.position() + 1) % align;
          char padding[256];
          padding[0] = static_cast<char>(pad);
          std::memset(padding + 1, 0xff, pad);
          status = output.AddBare(absl::string_view(padding, pad + 1));
        }
        if (!status.ok()) break;
        if (spec.kind == DumpArraySpec::Kind::kExternal) {
          status = output.Commit();
          if (!status.ok()) break;
          if (external_offsets == nullptr) {
            return Invalid(piece.array, "external data but nowhere to report its offset");
          }
          external_offsets->resize(arrays.size(), 0);
          if ((*external_offsets)[piece.array] != 0) {
            return Invalid(piece.array, "external data referred to twice");
          }
          (*external_offsets)[piece.array] = output.position();
          status = output.AddHole(spec.external_size);
        } else {
          status = output.AddBare(spec.data);
        }
        break;
      }
    }
    if (!status.ok()) return status;
  }
  status = output.Commit();
  if (!status.ok()) return status;
  return output.position();
}

}  // namespace persistd
