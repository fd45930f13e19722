#include "server/store/stale_sweeper.h"

#include <cstdint>
#include <set>

#include "common/log/log.h"
#include "server/store/source_state.h"

namespace persistd {

StaleSweeper::StaleSweeper(SegmentCache* cache, absl::Duration period)
    : cache_(cache), period_(period) {
  if (period_ > absl::ZeroDuration()) thread_ = std::thread([this] { Run(); });
}

StaleSweeper::~StaleSweeper() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

size_t StaleSweeper::SweepOnce() {
  const std::set<uint64_t> stale = StaleGenerations(*cache_);
  if (stale.empty()) return 0;
  SegmentCache::Evicted evicted = cache_->Evict(
      [&stale](const Segment& segment) { return stale.count(segment.generation) > 0; });
  for (const auto& segment : evicted.segments) {
    log::Info("evicted the segment of %s: the file was deleted or replaced",
              segment->version.path);
  }
  return evicted.segments.size();
}

void StaleSweeper::Run() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), period_)) {
    mu_.Unlock();
    SweepOnce();
    mu_.Lock();
  }
}

}  // namespace persistd
