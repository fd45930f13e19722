// BuildProgress tracks the segment builds under way, so that a client
// waiting for one can show how far it is (StatusReply.builds, polled by
// the Python client's progress bar while its Load runs).
//
// A build reports through its source's `ready` hook (SegmentSource.ready),
// which the builder calls with each offset before it reads the bytes below
// it: that offset, less where the source starts, is how much of the source
// has been decoded. The builder needs no change, and a source that already
// has a `ready` (a remote object being fetched) keeps it.
//
// Invariant (under mu_): builds_ holds exactly the Tracked scopes alive.
//
// Thread-safe.
#ifndef PERSISTD_SERVER_SERVICE_BUILD_PROGRESS_H_
#define PERSISTD_SERVER_SERVICE_BUILD_PROGRESS_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "proto/persistd.pb.h"
#include "server/store/segment_builder.h"

namespace persistd {

class BuildProgress {
 private:
  struct Entry {
    uint64_t dev = 0;
    uint64_t ino = 0;
    std::string path;
    uint64_t source_bytes = 0;
    std::atomic<uint64_t> read{0};
  };

 public:
  BuildProgress() = default;
  BuildProgress(const BuildProgress&) = delete;
  BuildProgress& operator=(const BuildProgress&) = delete;

  // One build, listed from construction to destruction.
  class Tracked {
   public:
    Tracked(Tracked&&) = delete;
    ~Tracked();
    // `source` with a `ready` hook that records progress (and calls the
    // source's own hook, if any). Valid while this scope lives.
    const SegmentSource& source() const { return source_; }

   private:
    friend class BuildProgress;
    Tracked(BuildProgress* owner, std::list<Entry>::iterator entry,
            const SegmentSource& source);
    BuildProgress* const owner_;
    const std::list<Entry>::iterator entry_;
    SegmentSource source_;
  };

  // Lists a build of `source`, whose file is (dev, ino) and was named
  // `path` by its client.
  std::unique_ptr<Tracked> Track(const SegmentSource& source, uint64_t dev,
                                 uint64_t ino, const std::string& path);

  // The builds under way now.
  std::vector<v1::BuildProgress> List() const;

 private:
  mutable absl::Mutex mu_;
  std::list<Entry> builds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_SERVICE_BUILD_PROGRESS_H_
