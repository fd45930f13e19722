#include "common/pickle/pickle_scanner.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/pickle/pickle_opcodes.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.

uint64_t LoadLE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// Parses an optional sign and decimal digits, nothing else. Returns false
// on any other text or when the value does not fit in int64.
bool ParseDecimal(absl::string_view text, int64_t* value) {
  size_t i = 0;
  bool negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) {
    negative = text[i] == '-';
    ++i;
  }
  if (i == text.size()) return false;
  // Accumulate as a negative number: its range is one larger.
  int64_t v = 0;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return false;
    const int digit = c - '0';
    if (v < (INT64_MIN + digit) / 10) return false;
    v = v * 10 - digit;
  }
  if (!negative) {
    if (v == INT64_MIN) return false;
    v = -v;
  }
  *value = v;
  return true;
}

// Decodes a little-endian two's complement integer of n bytes (LONG1/4).
bool DecodeLong(absl::string_view bytes, int64_t* value) {
  const size_t n = bytes.size();
  if (n == 0) {
    *value = 0;
    return true;
  }
  if (n > 8) return false;
  uint64_t v = LoadLE(bytes.data(), static_cast<int>(n));
  if (n < 8 && (static_cast<uint8_t>(bytes[n - 1]) & 0x80)) {
    v |= ~uint64_t{0} << (8 * n);  // sign-extend
  }
  *value = static_cast<int64_t>(v);
  return true;
}

}  // namespace

absl::Status PickleCorrupt(absl::string_view what, uint64_t offset) {
  return absl::DataLossError(absl::StrFormat(
      "pickle stream is corrupt: %s at offset %d", what, offset));
}

absl::Status PickleTruncated(uint64_t offset) {
  return PickleCorrupt("truncated", offset);
}

PickleScanner::PickleScanner(absl::string_view data, uint64_t start)
    : data_(data), pos_(start) {}

absl::Status PickleScanner::Truncated(uint64_t offset) {
  truncated_ = true;
  return PickleTruncated(offset);
}

absl::Status PickleScanner::Next(PickleOp* op) {
  const uint64_t offset = pos_;
  const uint64_t size = data_.size();
  if (offset >= size) return Truncated(offset);
  const char* const base = data_.data();
  const uint8_t code = static_cast<uint8_t>(base[offset]);
  uint64_t p = offset + 1;  // start of the argument
  op->code = code;
  op->offset = offset;
  op->has_int = false;
  op->int_value = 0;
  op->arg = absl::string_view();
  op->arg2 = absl::string_view();

  // Fixed-size argument of n bytes at p.
  auto need = [&](uint64_t n) { return n <= size - p; };
  // A counted payload of n bytes at p.
  auto payload = [&](uint64_t n) -> bool {
    if (!need(n)) return false;
    op->arg = absl::string_view(base + p, n);
    p += n;
    return true;
  };
  // One newline-terminated line at p, without its newline.
  auto line = [&](absl::string_view* out) -> bool {
    const void* nl = std::memchr(base + p, '\n', size - p);
    if (nl == nullptr) return false;
    const uint64_t n = static_cast<const char*>(nl) - (base + p);
    *out = absl::string_view(base + p, n);
    p += n + 1;
    return true;
  };
  auto set_int = [&](int64_t v) {
    op->int_value = v;
    op->has_int = true;
  };

  switch (code) {
    // No argument.
    case kMark: case kStop: case kPop: case kPopMark: case kDup:
    case kNone: case kBinPersId: case kReduce: case kAppend: case kBuild:
    case kDict: case kEmptyDict: case kAppends: case kList: case kEmptyList:
    case kObj: case kSetItem: case kTuple: case kEmptyTuple: case kSetItems:
    case kNewObj: case kTuple1: case kTuple2: case kTuple3: case kNewTrue:
    case kNewFalse: case kEmptySet: case kAddItems: case kFrozenSet:
    case kNewObjEx: case kStackGlobal: case kMemoize: case kNextBuffer:
    case kReadOnlyBuffer:
      break;

    // One-byte unsigned argument.
    case kBinInt1: case kBinGet: case kBinPut: case kProto: case kExt1:
      if (!need(1)) return Truncated(offset);
      set_int(static_cast<uint8_t>(base[p]));
      p += 1;
      break;

    case kBinInt2: case kExt2:
      if (!need(2)) return Truncated(offset);
      set_int(static_cast<int64_t>(LoadLE(base + p, 2)));
      p += 2;
      break;

    case kBinInt: case kExt4:  // signed 4 bytes
      if (!need(4)) return Truncated(offset);
      set_int(static_cast<int32_t>(LoadLE(base + p, 4)));
      p += 4;
      break;

    case kLongBinGet: case kLongBinPut:  // unsigned 4 bytes
      if (!need(4)) return Truncated(offset);
      set_int(static_cast<int64_t>(LoadLE(base + p, 4)));
      p += 4;
      break;

    case kBinFloat:
      if (!payload(8)) return Truncated(offset);
      break;

    case kFrame: {
      if (!need(8)) return Truncated(offset);
      const uint64_t frame_length = LoadLE(base + p, 8);
      p += 8;
      if (frame_length > size - p) return Truncated(offset);
      set_int(static_cast<int64_t>(frame_length));
      break;
    }

    case kLong1: {
      if (!need(1)) return Truncated(offset);
      const uint64_t n = static_cast<uint8_t>(base[p]);
      p += 1;
      if (!payload(n)) return Truncated(offset);
      int64_t v;
      if (DecodeLong(op->arg, &v)) set_int(v);
      break;
    }

    case kLong4: {
      if (!need(4)) return Truncated(offset);
      const int32_t n = static_cast<int32_t>(LoadLE(base + p, 4));
      p += 4;
      if (n < 0) return PickleCorrupt("LONG4 with a negative length", offset);
      if (!payload(static_cast<uint64_t>(n))) return Truncated(offset);
      int64_t v;
      if (DecodeLong(op->arg, &v)) set_int(v);
      break;
    }

    case kShortBinString: case kShortBinBytes: case kShortBinUnicode: {
      if (!need(1)) return Truncated(offset);
      const uint64_t n = static_cast<uint8_t>(base[p]);
      p += 1;
      if (!payload(n)) return Truncated(offset);
      break;
    }

    case kBinString: {  // signed length
      if (!need(4)) return Truncated(offset);
      const int32_t n = static_cast<int32_t>(LoadLE(base + p, 4));
      p += 4;
      if (n < 0) {
        return PickleCorrupt("BINSTRING with a negative length", offset);
      }
      if (!payload(static_cast<uint64_t>(n))) return Truncated(offset);
      break;
    }

    case kBinBytes: case kBinUnicode: {  // unsigned length
      if (!need(4)) return Truncated(offset);
      const uint64_t n = LoadLE(base + p, 4);
      p += 4;
      if (!payload(n)) return Truncated(offset);
      break;
    }

    case kBinUnicode8: case kBinBytes8: case kByteArray8: {
      if (!need(8)) return Truncated(offset);
      const uint64_t n = LoadLE(base + p, 8);
      p += 8;
      if (!payload(n)) return Truncated(offset);
      break;
    }

    case kInt: {
      if (!line(&op->arg)) return Truncated(offset);
      int64_t v;
      if (op->arg == "00") {
        set_int(0);
      } else if (op->arg == "01") {
        set_int(1);
      } else if (ParseDecimal(op->arg, &v)) {
        set_int(v);
      }
      break;
    }

    case kLong: {
      if (!line(&op->arg)) return Truncated(offset);
      absl::string_view digits = op->arg;
      if (!digits.empty() && digits.back() == 'L') digits.remove_suffix(1);
      int64_t v;
      if (ParseDecimal(digits, &v)) set_int(v);
      break;
    }

    case kGet: case kPut: {
      if (!line(&op->arg)) return Truncated(offset);
      int64_t v;
      if (!ParseDecimal(op->arg, &v) || v < 0) {
        return PickleCorrupt("invalid memo index", offset);
      }
      set_int(v);
      break;
    }

    case kFloat: case kPersId: case kUnicode:
      if (!line(&op->arg)) return Truncated(offset);
      break;

    case kString: {
      if (!line(&op->arg)) return Truncated(offset);
      absl::string_view s = op->arg;
      if (s.size() < 2 || s.front() != s.back() ||
          (s.front() != '\'' && s.front() != '"')) {
        return PickleCorrupt("STRING argument is not quoted", offset);
      }
      op->arg = absl::string_view(s.data() + 1, s.size() - 2);
      break;
    }

    case kGlobal: case kInst:
      if (!line(&op->arg) || !line(&op->arg2)) return Truncated(offset);
      break;

    default:
      return PickleCorrupt(absl::StrFormat("unknown opcode 0x%02x", code),
                           offset);
  }

  // Frames: an opcode that starts inside a frame must end inside it.
  if (offset < frame_end_) {
    if (p > frame_end_) {
      return PickleCorrupt("opcode runs past the end of its frame", offset);
    }
    if (code == kFrame) {
      return PickleCorrupt("FRAME before the end of the current frame",
                           offset);
    }
  }
  if (code == kFrame) frame_end_ = p + static_cast<uint64_t>(op->int_value);

  op->length = p - offset;
  pos_ = p;
  return absl::OkStatus();
}

}  // namespace persistd
