#include "client/cpp/pickle_emitter.h"

#include <cstdint>
#include <utility>

#include "common/pickle/pickle_opcodes.h"

namespace persistd {

namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.

void AppendLE(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

PickleEmitter::PickleEmitter() {
  Op(kProto);
  out_.push_back(4);
}

void PickleEmitter::Str(absl::string_view s) {
  if (s.size() < 256) {
    Op(kShortBinUnicode);
    out_.push_back(static_cast<char>(s.size()));
  } else {
    Op(kBinUnicode);
    AppendLE(&out_, s.size(), 4);
  }
  out_.append(s.data(), s.size());
}

void PickleEmitter::Int(int64_t v) {
  if (v >= 0 && v < 256) {
    Op(kBinInt1);
    out_.push_back(static_cast<char>(v));
  } else if (v >= 0 && v < 65536) {
    Op(kBinInt2);
    AppendLE(&out_, static_cast<uint64_t>(v), 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    Op(kBinInt);
    AppendLE(&out_, static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
  } else {
    Op(kLong1);  // 8 bytes of two's complement
    out_.push_back(8);
    AppendLE(&out_, static_cast<uint64_t>(v), 8);
  }
}

void PickleEmitter::Bool(bool v) { Op(v ? kNewTrue : kNewFalse); }
void PickleEmitter::None() { Op(kNone); }

void PickleEmitter::Global(absl::string_view module, absl::string_view name) {
  Str(module);
  Str(name);
  Op(kStackGlobal);
}

void PickleEmitter::Tuple(const std::vector<int64_t>& ints) {
  Mark();
  for (int64_t v : ints) Int(v);
  TupleMark();
}

void PickleEmitter::EmptyDict() { Op(kEmptyDict); }
void PickleEmitter::Mark() { Op(kMark); }
void PickleEmitter::SetItems() { Op(kSetItems); }
void PickleEmitter::Tuple3() { Op(kTuple3); }
void PickleEmitter::TupleMark() { Op(kTuple); }
void PickleEmitter::Reduce() { Op(kReduce); }
void PickleEmitter::Build() { Op(kBuild); }

void PickleEmitter::PersistentId(int64_t id) {
  Int(id);
  Op(kBinPersId);
}

std::string PickleEmitter::Finish() {
  Op(kStop);
  return std::move(out_);
}

std::string WrapperStatePickle(absl::string_view dtype,
                               const std::vector<uint64_t>& shape, char order) {
  // numpy pickles dtype('<f8') as dtype('f8', False, True) with state
  // (3, '<', None, None, None, -1, -1, 0): version, byte order, no
  // subarray, no fields, no names, elsize and alignment -1 (implied by the
  // type), no flags. That holds for the numeric kinds only.
  char byteorder = dtype.empty() ? '|' : dtype[0];
  absl::string_view kind = dtype.substr(dtype.empty() ? 0 : 1);
  const char order_text[] = {order, '\0'};
  PickleEmitter p;
  p.EmptyDict();
  p.Mark();
  p.Str("subclass");
  p.Global("numpy", "ndarray");
  p.Str("shape");
  std::vector<int64_t> dims(shape.begin(), shape.end());
  p.Tuple(dims);
  p.Str("order");
  p.Str(order_text);
  p.Str("dtype");
  p.Global("numpy", "dtype");
  p.Str(kind);
  p.Bool(false);
  p.Bool(true);
  p.Tuple3();
  p.Reduce();
  p.Mark();
  p.Int(3);
  p.Str(absl::string_view(&byteorder, 1));
  p.None();
  p.None();
  p.None();
  p.Int(-1);
  p.Int(-1);
  p.Int(0);
  p.TupleMark();
  p.Build();
  p.Str("allow_mmap");
  p.Bool(true);
  p.Str("numpy_array_alignment_bytes");
  p.Int(16);
  p.SetItems();
  return p.Finish();
}

}  // namespace persistd
