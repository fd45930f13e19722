// PickleScanner walks the opcodes of a pickle byte stream without executing
// anything: for each opcode it reports the opcode byte, where it sits, how
// long it is and its decoded argument. Arguments are views into the scanned
// buffer and are never copied, so a BINBYTES8 of several GB costs nothing.
//
// The input is untrusted: every length is checked against the end of the
// buffer before it is used, and an unknown opcode or an argument that runs
// past the end gives DataLossError, never a crash or an overread.
//
// Frames (protocol 4 FRAME) are checked as pickle.py's _Unframer checks
// them: an opcode inside a frame must end inside it, and a FRAME may not
// start before the current frame is exhausted.
//
// A PickleScanner is not thread-safe. The scanned buffer must outlive it and
// every PickleOp it produced.
#ifndef PERSISTD_COMMON_PICKLE_PICKLE_SCANNER_H_
#define PERSISTD_COMMON_PICKLE_PICKLE_SCANNER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace persistd {

// One decoded opcode.
struct PickleOp {
  uint8_t code = 0;
  uint64_t offset = 0;  // of the opcode byte in the scanned buffer
  uint64_t length = 0;  // opcode byte plus argument

  // int_value is valid iff has_int. It is set for
  //  - int opcodes (INT, BININT*, LONG, LONG1, LONG4) whose value fits in
  //    int64; INT "00"/"01" (protocol 0 False/True) give 0/1;
  //  - memo opcodes PUT/BINPUT/LONG_BINPUT/GET/BINGET/LONG_BINGET: the index
  //    (always >= 0; an unparsable or negative index is a DataLoss error);
  //  - PROTO (the version), FRAME (the frame length), EXT1/2/4 (the code).
  int64_t int_value = 0;
  bool has_int = false;

  // arg is the payload of string/bytes opcodes (STRING: the text between
  // the quotes, still escaped; UNICODE: still raw-unicode-escaped), the text
  // of FLOAT, PERSID and of INT/LONG/PUT/GET, the 8 bytes of BINFLOAT, the
  // bytes of LONG1/LONG4, and the module of GLOBAL/INST. arg2 is the name of
  // GLOBAL/INST. Both are empty otherwise.
  absl::string_view arg;
  absl::string_view arg2;

  uint64_t end() const { return offset + length; }
};

class PickleScanner {
 public:
  // Scans `data` from `start`. REQUIRES: start <= data.size().
  explicit PickleScanner(absl::string_view data, uint64_t start = 0);

  PickleScanner(const PickleScanner&) = delete;
  PickleScanner& operator=(const PickleScanner&) = delete;

  // Decodes the opcode at position() into *op and moves past it. At the end
  // of the buffer, or on a corrupt opcode, returns DataLossError("pickle
  // stream is corrupt: ... at offset N") and leaves position() unchanged.
  absl::Status Next(PickleOp* op);

  // Whether the last Next() since the last Rebase() or Seek() failed only
  // because the buffer ended inside the opcode (or inside the frame it
  // opens): more bytes may yet make it whole. Any other error is final,
  // whatever follows.
  bool truncated() const { return truncated_; }

  // Continues over `data`, the scanned buffer with more bytes after it
  // (possibly moved), for a stream that arrives in pieces. REQUIRES: data
  // starts with the bytes scanned so far.
  void Rebase(absl::string_view data) {
    data_ = data;
    truncated_ = false;
  }

  bool AtEnd() const { return pos_ >= data_.size(); }
  uint64_t position() const { return pos_; }

  // True iff position() lies inside a frame that is not exhausted.
  bool InFrame() const { return pos_ < frame_end_; }

  // Continues scanning at `pos`, e.g. after raw array data that follows a
  // wrapper. REQUIRES: pos <= size and !InFrame().
  void Seek(uint64_t pos) {
    pos_ = pos;
    truncated_ = false;
  }

  // For callers that decode hot opcodes themselves (SymbolicStack::Run):
  // the scanned buffer, the offset that the next opcode must end at or
  // before (the end of the current frame, else of the buffer), and a way to
  // move past an opcode decoded by the caller.
  absl::string_view data() const { return data_; }
  uint64_t opcode_limit() const {
    return pos_ < frame_end_ ? frame_end_ : data_.size();
  }
  // REQUIRES: the n bytes at position() are one opcode other than FRAME,
  // and position() + n <= opcode_limit().
  void Consume(uint64_t n) { pos_ += n; }

 private:
  absl::Status Truncated(uint64_t offset);

  // Invariant: pos_ <= data_.size() and pos_ is an opcode boundary; when
  // pos_ < frame_end_, the opcodes up to frame_end_ form the current frame,
  // which lies inside data_.
  absl::string_view data_;
  uint64_t pos_;
  uint64_t frame_end_ = 0;  // end of the last frame seen; 0 if none
  bool truncated_ = false;  // see truncated()
};

// Error helpers shared by the format layer, so every message reads alike.
absl::Status PickleCorrupt(absl::string_view what, uint64_t offset);
absl::Status PickleTruncated(uint64_t offset);

}  // namespace persistd

#endif  // PERSISTD_COMMON_PICKLE_PICKLE_SCANNER_H_
