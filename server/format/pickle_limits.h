// Limits on what indexing one untrusted joblib stream may cost.
//
// The pickle part of a stream (everything but raw array data) is held in
// memory while it is indexed, and the symbolic unpickler's stack and memo
// grow with what the pickle does, not with its size on disk: 945 bytes of
// zstd hold 30 million MARK opcodes, which an unbounded stack turns into
// more than a gigabyte. Every allocation that grows with the input is
// therefore charged to a MemoryBudget, and a stream that needs more than
// the limits is refused with an error that names the limit and the daemon
// flag that raises it -- never an out-of-memory kill of the daemon.
#ifndef PERSISTD_SERVER_FORMAT_PICKLE_LIMITS_H_
#define PERSISTD_SERVER_FORMAT_PICKLE_LIMITS_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace persistd {

struct PickleLimits {
  // Defaults. A skeleton of a million small objects is about 20 MB of
  // pickle and needs about 8 MB of index memory, so both leave a wide
  // margin for real files while keeping a hostile one far from the
  // machine's memory.
  static constexpr uint64_t kDefaultMaxPickleBytes = uint64_t{256} << 20;
  static constexpr uint64_t kDefaultMaxIndexMemory = uint64_t{32} << 20;

  // The largest pickle part (opcodes, padding, object-array pickles; not
  // raw array data) of a decoded stream. It is held in memory while the
  // stream is indexed. Daemon flag: --max-pickle-bytes.
  uint64_t max_pickle_bytes = kDefaultMaxPickleBytes;
  // The memory the indexer may allocate for one stream besides the
  // pickle bytes themselves: the symbolic unpickler's stack, marks, memo
  // and side tables, and the list of arrays and edits it returns. Daemon
  // flag: --max-pickle-memory.
  uint64_t max_index_memory = kDefaultMaxIndexMemory;
};

// Counts the bytes an indexer holds against a limit. Charges are
// approximate where the allocator hides the truth (a hash map node is
// counted as kHashNodeBytes) and exact for vectors (their capacity).
//
// Some memory is only worth having while nothing else needs it: the
// tables that name each array's place in the value (object_paths.h) can be
// given up without failing the stream. Its holder charges it with
// TryChargeSpare and registers as the budget's Spare; a TryCharge that
// would fail first asks the Spare to give everything back (once: the holder
// then stops tracking), so spare memory never makes the budget refuse a
// stream it would accept without it.
//
// Invariant: used_ <= limit_.
//
// Not thread-safe; one indexer uses it.
class MemoryBudget {
 public:
  // What a std::unordered_map entry with small key and value costs:
  // the node (next pointer, key, value, malloc overhead) and its share of
  // the bucket array.
  static constexpr uint64_t kHashNodeBytes = 48;

  // The holder of spare memory.
  class Spare {
   public:
    virtual ~Spare() = default;
    // Frees all the spare memory and refunds it to the budget.
    virtual void Release() = 0;
  };

  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Charges `bytes` if they fit, after releasing the spare memory if they
  // would not otherwise; false (and nothing charged) when they still do not.
  bool TryCharge(uint64_t bytes) {
    if (bytes > limit_ - used_ && !ReleaseSpare()) return false;
    return TryChargeSpare(bytes);
  }
  // Charges `bytes` of spare memory if they fit as things are.
  bool TryChargeSpare(uint64_t bytes) {
    if (bytes > limit_ - used_) return false;
    used_ += bytes;
    return true;
  }
  void Refund(uint64_t bytes) { used_ -= bytes < used_ ? bytes : used_; }

  // Registers the holder of spare memory (null: none). It must outlive the
  // budget or be unregistered first.
  void set_spare(Spare* spare) { spare_ = spare; }
  // Has the spare holder release its memory; false if there is none.
  bool ReleaseSpare() {
    if (spare_ == nullptr) return false;
    Spare* spare = spare_;
    spare_ = nullptr;
    spare->Release();
    return true;
  }

  uint64_t used() const { return used_; }
  uint64_t limit() const { return limit_; }
  uint64_t available() const { return limit_ - used_; }

 private:
  const uint64_t limit_;
  uint64_t used_ = 0;
  Spare* spare_ = nullptr;
};

// The errors for a stream over a limit: InvalidArgument, the code of a
// file the daemon will not load (Python clients raise ValueError, as for a
// corrupt file; ResourceExhausted means a full disk to them), naming the
// limit and the flag that raises it. `what` says what outgrew the limit
// ("the unpickler's stack", "the memo"); `offset` is where in the stream.
absl::Status IndexMemoryExceeded(uint64_t limit, absl::string_view what,
                                 uint64_t offset);
absl::Status PickleBytesExceeded(uint64_t limit, uint64_t offset);

// Makes room for `n` elements in *v, charging `budget` for the capacity it
// adds: doubling while the budget allows (amortized O(1) appends), then
// whatever is left in one step, never one element at a time. While the
// elements move, the old buffer and the new one both exist, so the new one
// must fit beside everything charged (the old one included): the budget
// bounds the true peak. The spare memory is released first when the
// doubling would not fit beside it. False, with nothing charged or changed,
// when `n` elements do not fit. With `spare`, the capacity is charged as
// spare memory and nothing is released.
template <typename T>
bool ReserveCharged(MemoryBudget* budget, std::vector<T>* v, size_t n,
                    bool spare = false) {
  const size_t capacity = v->capacity();
  if (n <= capacity) return true;
  uint64_t want = std::max<uint64_t>({n, 2 * uint64_t{capacity}, 16});
  uint64_t most = budget->available() / sizeof(T);
  // Spare memory gives way before growth is cut short: a vector that grows
  // by less than it would without it may later need old and new beside
  // each other where doubling would not.
  if (most < want && !spare && budget->ReleaseSpare()) {
    most = budget->available() / sizeof(T);
  }
  if (want > most) want = most;
  if (want < n) return false;
  budget->TryChargeSpare(want * sizeof(T));
  v->reserve(static_cast<size_t>(want));
  budget->Refund(capacity * sizeof(T));
  return true;
}

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_PICKLE_LIMITS_H_
