// ParallelEncoder cuts a stream into fixed-size blocks, compresses them on
// worker threads and writes the results in stream order, so that the
// output is one standard stream made of independently compressed pieces
// (pigz-style). The codec-specific half is a BlockCodec.
//
// Used by zlib, gzip and lz4 when NewEncoder is given threads > 1, and by
// zlib and gzip at levels 1-3 on one thread too (NewSerialBlockEncoder),
// where each block may be compressed by a different library.
#ifndef PERSISTD_SERVER_CODEC_PARALLEL_ENCODER_H_
#define PERSISTD_SERVER_CODEC_PARALLEL_ENCODER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace codec_internal {

// One piece of the stream on its way through the workers.
struct Block {
  // Up to the encoder's history size of uncompressed bytes just before
  // `data` (empty for the first block); a codec may use it as a dictionary.
  std::string history;
  // The uncompressed bytes of this block.
  std::string data;
  // True for the final block of the stream (possibly with empty `data`).
  bool last = false;

  // Set by BlockCodec::CompressBlock: storage for the compressed bytes,
  // the bytes to write (usually a view into `output`), and a checksum the
  // codec defines.
  std::string output;
  absl::string_view compressed;
  uint32_t check = 0;
};

// The codec-specific half of a ParallelEncoder.
//
// Thread safety: CompressBlock runs on worker threads, concurrently with
// itself for different `worker` values (each in [0, threads)); every other
// method runs on the thread that owns the encoder, never concurrently with
// itself. Under NewSerialBlockEncoder, CompressBlock runs on the owner's
// thread with worker 0.
class BlockCodec {
 public:
  virtual ~BlockCodec() = default;

  // Bytes written before the first block.
  virtual std::string Header() = 0;
  // Compresses block->data (with block->history as context, if the codec
  // uses one) and sets block->compressed and, if used, block->check.
  virtual absl::Status CompressBlock(int worker, Block* block) = 0;
  // Called in stream order as each block is written (to fold checksums).
  virtual void BlockWritten(const Block& /*block*/) {}
  // Bytes written after the last block.
  virtual std::string Trailer() = 0;
};

// Returns an encoder that feeds `codec` blocks of `block_size` bytes, each
// carrying `history_size` bytes of history, on `threads` worker threads
// (threads >= 1; at most 2 * threads blocks are in memory at once).
// REQUIRES: `out` outlives the encoder.
std::unique_ptr<ByteSink> NewParallelEncoder(std::unique_ptr<BlockCodec> codec,
                                             int threads, size_t block_size,
                                             size_t history_size,
                                             ByteSink* out);

// The same stream as NewParallelEncoder, compressed block by block on the
// calling thread (inside Append and Finish), with no worker threads.
// REQUIRES: `out` outlives the encoder.
std::unique_ptr<ByteSink> NewSerialBlockEncoder(
    std::unique_ptr<BlockCodec> codec, size_t block_size, size_t history_size,
    ByteSink* out);

}  // namespace codec_internal
}  // namespace persistd

#endif  // PERSISTD_SERVER_CODEC_PARALLEL_ENCODER_H_
