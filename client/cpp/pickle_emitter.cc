#include "client/cpp/pickle_emitter.h"

#include <cstring>

namespace persistd {

namespace {

void AppendLE(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

PickleEmitter::PickleEmitter() { out_ = "\x80\x04"; }

void PickleEmitter::Str(absl::string_view s) {
  if (s.size() < 256) {
    out_.push_back('\x8c');  // SHORT_BINUNICODE
    out_.push_back(static_cast<char>(s.size()));
  } else {
    out_.push_back('X');  // BINUNICODE
    AppendLE(&out_, s.size(), 4);
  }
  out_.append(s.data(), s.size());
}

void PickleEmitter::Int(int64_t v) {
  if (v >= 0 && v < 256) {
    out_.push_back('K');  // BININT1
    out_.push_back(static_cast<char>(v));
  } else if (v >= 0 && v < 65536) {
    out_.push_back('M');  // BININT2
    AppendLE(&out_, static_cast<uint64_t>(v), 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    out_.push_back('J');  // BININT
    AppendLE(&out_, static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
  } else {
    out_.push_back('\x8a');  // LONG1, 8 bytes two's complement
    out_.push_back(8);
    AppendLE(&out_, static_cast<uint64_t>(v), 8);
  }
}

void PickleEmitter::Bool(bool v) { out_.push_back(v ? '\x88' : '\x89'); }
void PickleEmitter::None() { out_.push_back('N'); }

void PickleEmitter::Global(absl::string_view module, absl::string_view name) {
  Str(module);
  Str(name);
  out_.push_back('\x93');  // STACK_GLOBAL
}

void PickleEmitter::Tuple(const std::vector<int64_t>& ints) {
  Mark();
  for (int64_t v : ints) Int(v);
  TupleMark();
}

void PickleEmitter::EmptyDict() { out_.push_back('}'); }
void PickleEmitter::Mark() { out_.push_back('('); }
void PickleEmitter::SetItems() { out_.push_back('u'); }
void PickleEmitter::Tuple3() { out_.push_back('\x87'); }
void PickleEmitter::TupleMark() { out_.push_back('t'); }
void PickleEmitter::Reduce() { out_.push_back('R'); }
void PickleEmitter::Build() { out_.push_back('b'); }

void PickleEmitter::PersistentId(int64_t id) {
  Int(id);
  out_.push_back('Q');  // BINPERSID
}

std::string PickleEmitter::Finish() {
  out_.push_back('.');
  return std::move(out_);
}

std::string WrapperStatePickle(absl::string_view dtype,
                               const std::vector<uint64_t>& shape) {
  // numpy pickles dtype('<f8') as dtype('f8', False, True) with state
  // (3, '<', None, None, None, -1, -1, 0).
  char byteorder = dtype.empty() ? '|' : dtype[0];
  absl::string_view kind = dtype.substr(dtype.empty() ? 0 : 1);
  PickleEmitter p;
  p.EmptyDict();
  p.Mark();
  p.Str("subclass");
  p.Global("numpy", "ndarray");
  p.Str("shape");
  std::vector<int64_t> dims(shape.begin(), shape.end());
  p.Tuple(dims);
  p.Str("order");
  p.Str("C");
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
