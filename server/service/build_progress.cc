#include "server/service/build_progress.h"

#include <utility>

namespace persistd {

BuildProgress::Tracked::Tracked(BuildProgress* owner,
                                std::list<Entry>::iterator entry,
                                const SegmentSource& source)
    : owner_(owner), entry_(entry), source_(source) {
  Entry* const e = &*entry_;
  const uint64_t start = source.offset;
  PayloadReady inner = source.ready;
  source_.ready = [e, start, inner](uint64_t offset) -> absl::Status {
    if (inner) {
      absl::Status status = inner(offset);
      if (!status.ok()) return status;
    }
    const uint64_t read = offset > start ? offset - start : 0;
    // Only forward: the builder may re-read a piece it saw.
    uint64_t seen = e->read.load(std::memory_order_relaxed);
    while (read > seen &&
           !e->read.compare_exchange_weak(seen, read, std::memory_order_relaxed)) {
    }
    return absl::OkStatus();
  };
}

BuildProgress::Tracked::~Tracked() {
  absl::MutexLock lock(&owner_->mu_);
  owner_->builds_.erase(entry_);
}

std::unique_ptr<BuildProgress::Tracked> BuildProgress::Track(
    const SegmentSource& source, uint64_t dev, uint64_t ino, const std::string& path) {
  std::list<Entry>::iterator entry;
  {
    absl::MutexLock lock(&mu_);
    entry = builds_.emplace(builds_.end());
    entry->dev = dev;
    entry->ino = ino;
    entry->path = path;
    entry->source_bytes = source.size;
  }
  return std::unique_ptr<Tracked>(new Tracked(this, entry, source));
}

std::vector<v1::BuildProgress> BuildProgress::List() const {
  std::vector<v1::BuildProgress> out;
  absl::MutexLock lock(&mu_);
  out.reserve(builds_.size());
  for (const Entry& e : builds_) {
    v1::BuildProgress progress;
    progress.mutable_source()->set_dev(e.dev);
    progress.mutable_source()->set_ino(e.ino);
    progress.set_source_path(e.path);
    progress.set_source_bytes(e.source_bytes);
    progress.set_read_bytes(e.read.load(std::memory_order_relaxed));
    out.push_back(std::move(progress));
  }
  return out;
}

}  // namespace persistd
