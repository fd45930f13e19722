// WriteJoblibStream turns a client's "skeleton" pickle plus its arrays into
// the byte stream joblib.dump would write (uncompressed; a codec sink may
// compress it on the way out).
//
// The client pickles its value with the C pickler, with persistent_id
// returning an int index for every ndarray (types exactly np.ndarray,
// np.matrix, np.memmap). Each array then appears in the skeleton as
// "<int> BINPERSID" (protocol >= 1) or "PERSID '<decimal>\n'" (protocol 0).
// For array k the client also sends:
//  - state_pickle: the NumpyArrayWrapper state dict ({'subclass', 'shape',
//    'order', 'dtype', 'allow_mmap', 'numpy_array_alignment_bytes'})
//    pickled alone, with the skeleton's protocol and no memo
//    (Pickler.fast = True): [PROTO] [FRAME] dict opcodes STOP;
//  - data: the raw array bytes in the wrapper's order (kRaw), or, for a
//    dtype with hasobject, a complete nested pickle of the array (joblib
//    writes it with protocol 5) (kObjectStream).
//
// Every persistent id occurrence k becomes, as joblib writes it:
//   NumpyArrayWrapper instance opcodes (STACK_GLOBAL/GLOBAL + EMPTY_TUPLE +
//   NEWOBJ; copy_reg._reconstructor + REDUCE for protocol 0/1), the state
//   dict opcodes, BUILD; the end of the pickle frame (protocol >= 4); then
//   kRaw: pad byte p = 16 - ((pos + 1) % 16), p bytes 0xFF (when the state
//   has numpy_array_alignment_bytes), the data; kObjectStream: the nested
//   pickle verbatim.
// The inserted opcodes use no memo, so the skeleton's memo indices stay
// valid. The skeleton's own FRAMEs are dropped and the output is re-framed
// the way pickle._Framer frames (>= 64 KiB frames at opcode boundaries,
// headers only for frames of >= 4 bytes, opcodes of >= 64 KiB unframed).
#ifndef PERSISTD_SERVER_FORMAT_JOBLIB_WRITER_H_
#define PERSISTD_SERVER_FORMAT_JOBLIB_WRITER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/io/byte_sink.h"

namespace persistd {

struct DumpArraySpec {
  // kExternal: raw bytes the caller writes itself into the hole the writer
  // leaves for them (out->Skip), so they are copied once, by their owner.
  enum class Kind { kRaw, kObjectStream, kExternal };
  Kind kind;
  absl::string_view state_pickle;  // complete pickle of the wrapper state dict
  absl::string_view data;          // raw bytes, or a complete nested pickle
  uint64_t external_size = 0;      // kExternal: the length of the hole

  uint64_t data_size() const {
    return kind == Kind::kExternal ? external_size : data.size();
  }
};

// Writes the joblib stream for `skeleton` with `arrays` spliced in to `out`
// and returns the number of bytes written (the uncompressed stream length).
// Does not call out->Finish(). `data` is handed to out->Append in one call,
// never copied.
//
// Everything is validated before the first byte is written:
// InvalidArgumentError for a skeleton or state pickle that is corrupt, a
// persistent id that is not an index into `arrays`, an array no persistent
// id refers to, a state pickle that uses the memo or is not a wrapper state
// dict of the skeleton's protocol, or data whose length does not match the
// state's shape and dtype (kRaw) or that is not one complete pickle
// (kObjectStream). Errors from `out` are returned as they are; the stream
// is then incomplete.
// `external_offsets` (may be null when there are no kExternal arrays) is
// resized to arrays.size() and receives, at each kExternal array's index,
// the stream offset of its hole (never 0: the PROTO opcode comes first).
// A kExternal array referred to twice is InvalidArgument.
absl::StatusOr<uint64_t> WriteJoblibStream(
    absl::string_view skeleton, const std::vector<DumpArraySpec>& arrays,
    ByteSink* out, std::vector<uint64_t>* external_offsets = nullptr);

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_JOBLIB_WRITER_H_
