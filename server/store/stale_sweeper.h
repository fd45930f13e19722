// StaleSweeper evicts, on its own, the segments whose source is gone: every
// `period` it stats the recorded path of each current segment and evicts
// those whose file was deleted or replaced (source_state.h). Such a segment
// can never serve a load again, yet would hold store space until LRU
// pressure reached it. A leased one stops serving at once and its file goes
// with its last lease, as with any eviction.
//
// Invariant: the sweeping thread runs from construction until the
// destructor returns; the destructor wakes it and joins, so it never
// outlives the cache it sweeps.
#ifndef PERSISTD_SERVER_STORE_STALE_SWEEPER_H_
#define PERSISTD_SERVER_STORE_STALE_SWEEPER_H_

#include <cstddef>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/segment_cache.h"

namespace persistd {

class StaleSweeper {
 public:
  // `cache` must outlive this object. A zero `period` sweeps never.
  StaleSweeper(SegmentCache* cache, absl::Duration period);
  StaleSweeper(const StaleSweeper&) = delete;
  StaleSweeper& operator=(const StaleSweeper&) = delete;
  ~StaleSweeper();

  // One pass, now: the number of segments it evicted.
  size_t SweepOnce();

 private:
  void Run();

  SegmentCache* const cache_;
  const absl::Duration period_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_STALE_SWEEPER_H_
