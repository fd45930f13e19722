#include "server/store/segment_cache.h"

#include <dirent.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace persistd {

namespace {

void RemoveSegmentFiles(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (struct dirent* entry = ::readdir(d)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    ::unlink((dir + "/" + name).c_str());
  }
  ::closedir(d);
}

}  // namespace

SegmentCache::SegmentCache(std::string dir, uint64_t budget_bytes)
    : dir_(std::move(dir)), budget_(budget_bytes) {
  // Segments are indexed in memory only, so those of an earlier run (or a
  // crash mid-build) are garbage.
  RemoveSegmentFiles(dir_);
}

SegmentCache::~SegmentCache() {
  absl::MutexLock lock(&mu_);
  for (auto& [raw, entry] : entries_) {
    if (entry->segment) ::unlink(entry->segment->path.c_str());
  }
}

absl::StatusOr<SegmentCache::Acquired> SegmentCache::Acquire(
    const SourceVersion& version, bool cacheable, const Builder& build,
    const std::string& session) {
  auto key = std::make_tuple(version.dev, version.ino, version.raw);
  Entry* entry = nullptr;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    ++loads_;
    while (cacheable) {
      auto it = current_.find(key);
      if (it == current_.end()) break;
      Entry* found = it->second;
      if (!found->segment) {  // another request is building it
        built_.Wait(&mu_);
        continue;
      }
      if (found->segment->version == version) {
        ++hits_;
        Acquired result;
        result.segment = found->segment;
        result.hit = true;
        if (!session.empty()) result.lease_id = LeaseLocked(session, found);
        else if (found->in_lru) {
          lru_.erase(found->lru_pos);
          lru_.push_back(found);
          found->lru_pos = std::prev(lru_.end());
        }
        return result;
      }
      // The source changed: the old segment stops being served but lives
      // on (unlinked once unleased) for the clients that map it.
      RetireLocked(found);
      break;
    }
    auto owned = std::make_unique<Entry>();
    entry = owned.get();
    entry->key = key;
    entries_[entry] = std::move(owned);
    if (cacheable) current_[key] = entry;
    generation = next_generation_++;
  }

  std::string path = absl::StrCat(dir_, "/", generation, ".seg");
  uint64_t size = 0;
  absl::StatusOr<v1::LoadReply> index = build(path, &size);

  absl::MutexLock lock(&mu_);
  built_.SignalAll();
  if (!index.ok()) {
    ::unlink(path.c_str());
    auto it = current_.find(key);
    if (it != current_.end() && it->second == entry) current_.erase(it);
    entries_.erase(entry);
    return index.status();
  }
  auto segment = std::make_shared<Segment>();
  segment->path = path;
  segment->size = size;
  segment->generation = generation;
  segment->version = version;
  segment->index = *std::move(index);
  entry->segment = segment;
  entry->current = cacheable;
  total_bytes_ += size;

  Acquired result;
  result.segment = segment;
  if (!session.empty()) {
    result.lease_id = LeaseLocked(session, entry);
  } else {
    lru_.push_back(entry);
    entry->lru_pos = std::prev(lru_.end());
    entry->in_lru = true;
  }
  EvictToBudgetLocked();
  return result;
}

std::string SegmentCache::LeaseLocked(const std::string& session,
                                      Entry* entry) {
  if (entry->in_lru) {
    lru_.erase(entry->lru_pos);
    entry->in_lru = false;
  }
  ++entry->leases;
  std::string id = absl::StrCat("L", next_lease_++);
  leases_[id] = LeaseRecord{session, entry};
  sessions_[session].insert(id);
  return id;
}

void SegmentCache::Release(const std::string& session,
                           const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || it->second.session != session) return;
  Entry* entry = it->second.entry;
  leases_.erase(it);
  sessions_[session].erase(lease_id);
  DropLeaseLocked(entry);
  EvictToBudgetLocked();
}

void SegmentCache::EndSession(const std::string& session) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  for (const std::string& lease_id : it->second) {
    auto lease = leases_.find(lease_id);
    if (lease == leases_.end()) continue;
    Entry* entry = lease->second.entry;
    leases_.erase(lease);
    DropLeaseLocked(entry);
  }
  sessions_.erase(it);
  EvictToBudgetLocked();
}

void SegmentCache::DropLeaseLocked(Entry* entry) {
  if (--entry->leases > 0) return;
  if (!entry->current) {
    RemoveLocked(entry);
    return;
  }
  lru_.push_back(entry);
  entry->lru_pos = std::prev(lru_.end());
  entry->in_lru = true;
}

void SegmentCache::RetireLocked(Entry* entry) {
  auto it = current_.find(entry->key);
  if (it != current_.end() && it->second == entry) current_.erase(it);
  entry->current = false;
  if (entry->leases == 0) RemoveLocked(entry);
}

void SegmentCache::RemoveLocked(Entry* entry) {
  if (entry->in_lru) lru_.erase(entry->lru_pos);
  auto it = current_.find(entry->key);
  if (it != current_.end() && it->second == entry) current_.erase(it);
  if (entry->segment) {
    ::unlink(entry->segment->path.c_str());
    total_bytes_ -= entry->segment->size;
  }
  entries_.erase(entry);
}

void SegmentCache::EvictToBudgetLocked() {
  while (total_bytes_ > budget_ && !lru_.empty()) {
    Entry* victim = lru_.front();
    ++evictions_;
    RemoveLocked(victim);
  }
}

SegmentCache::Stats SegmentCache::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s;
  for (const auto& [raw, entry] : entries_) {
    if (!entry->segment) continue;
    ++s.segments;
    if (entry->leases > 0) ++s.leased_segments;
  }
  s.bytes = total_bytes_;
  s.budget = budget_;
  s.loads = loads_;
  s.hits = hits_;
  s.evictions = evictions_;
  return s;
}

}  // namespace persistd
