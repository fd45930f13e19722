// CacheWarmer builds, in the background, the segment of a compressed file
// this daemon just wrote, so the first load of a fresh dump finds it
// decompressed already (the headline case: one process dumps a model, N
// workers load it).
//
// The build runs after the Dump reply, while the client publishes the file:
// a dump is not slowed down, and a load that arrives meanwhile waits for
// the same build instead of starting its own (SegmentCache::Acquire). The
// version is recorded with an unknown ctime, which the client's
// linkat/rename is about to change; the first load fills it in.
//
// Invariant (under mu_): queue_ holds at most kMaxQueued jobs; once
// stopping_ is set nothing is queued and the thread exits after its
// current job.
//
// Thread-safe.
#ifndef PERSISTD_SERVER_SERVICE_CACHE_WARMER_H_
#define PERSISTD_SERVER_SERVICE_CACHE_WARMER_H_

#include <deque>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/io/scoped_fd.h"
#include "server/service/build_progress.h"
#include "server/store/segment_cache.h"

namespace persistd {

class CacheWarmer {
 public:
  // `builds` lists the warmer's builds while they run; both must outlive
  // the warmer.
  CacheWarmer(SegmentCache* cache, BuildProgress* builds);
  ~CacheWarmer();  // stops: queued jobs are dropped, a running one finishes
  CacheWarmer(const CacheWarmer&) = delete;
  CacheWarmer& operator=(const CacheWarmer&) = delete;

  // Queues a build of the file open at `fd` (fully written), as `version`
  // with an unknown ctime; `client_pid` dumped it (for the log). Dropped
  // when the queue is full.
  void Warm(ScopedFd fd, SourceVersion version, std::string name, int client_pid);

 private:
  struct Job {
    ScopedFd fd;
    SourceVersion version;
    std::string name;
    int client_pid = -1;
  };
  void Loop();

  SegmentCache* const cache_;
  BuildProgress* const builds_;
  absl::Mutex mu_;
  absl::CondVar wake_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_CACHE_WARMER_H_
