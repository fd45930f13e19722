#include "server/service/cache_warmer.h"

#include <utility>

#include "common/log/log.h"
#include "server/store/segment_builder.h"

namespace persistd {

namespace {

// Dumps rarely come faster than their files decompress; beyond this many
// waiting builds, later dumps are simply not warmed.
constexpr size_t kMaxQueued = 8;

}  // namespace

CacheWarmer::CacheWarmer(SegmentCache* cache, BuildProgress* builds)
    : cache_(cache), builds_(builds), thread_([this] { Loop(); }) {}

CacheWarmer::~CacheWarmer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    queue_.clear();
    wake_.Signal();
  }
  thread_.join();
}

void CacheWarmer::Warm(ScopedFd fd, SourceVersion version, std::string name,
                       int client_pid) {
  version.ctime_ns = SourceVersion::kUnknownCtime;
  absl::MutexLock lock(&mu_);
  if (stopping_ || queue_.size() >= kMaxQueued) return;
  queue_.push_back(Job{std::move(fd), std::move(version), std::move(name), client_pid});
  wake_.Signal();
}

void CacheWarmer::Loop() {
  for (;;) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      while (queue_.empty() && !stopping_) wake_.Wait(&mu_);
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    SegmentSource source{job.fd.get(), job.version.size, job.name, false};
    // Nobody abandons a warming: it needs no Wanted.
    auto build = [this, &source, &job](const std::string& path,
                                       const SegmentCache::Wanted&, uint64_t* size) {
      std::unique_ptr<BuildProgress::Tracked> tracked =
          builds_->Track(source, job.version.dev, job.version.ino, job.name);
      return BuildSegment(tracked->source(), path, size);
    };
    absl::StatusOr<SegmentCache::Acquired> built =
        cache_->Acquire(job.version, /*cacheable=*/true, build, "",
                        /*abandoned=*/nullptr);
    if (!built.ok()) {
      log::Warning("warming the cache for %s (dumped by pid %d) failed: %s", job.name,
                   job.client_pid, built.status().message());
    } else {
      log::Info("warmed the cache for %s (dumped by pid %d): %s", job.name,
                job.client_pid, built->hit ? "it was cached already" : "segment built");
    }
  }
}

}  // namespace persistd
