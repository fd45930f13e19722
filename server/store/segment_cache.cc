#include "server/store/segment_cache.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <fstream>
#include <new>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/io/atomic_file.h"
#include "common/log/log.h"
#include "proto/store.pb.h"
#include "server/io/byte_sink.h"

namespace persistd {

namespace {

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (struct dirent* entry = ::readdir(d)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

bool SegmentFileMissing(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) != 0 && errno == ENOENT;
}

// This boot of the kernel, as /proc names it; "" when it cannot tell (no
// /proc), which then matches only records that could not tell either.
std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

std::string MetaPath(const std::string& segment_path) {
  return segment_path.substr(0, segment_path.size() - 4) + ".meta";
}

}  // namespace

SegmentCache::SegmentCache(std::string dir, uint64_t budget_bytes)
    : dir_(std::move(dir)), budget_(budget_bytes), boot_id_(BootId()) {
  absl::MutexLock lock(&mu_);
  AdoptRecordsLocked();
  EvictToBudgetLocked();
}

SegmentCache::~SegmentCache() {
  absl::MutexLock lock(&mu_);
  // Recorded segments stay for the next run; private ones go.
  for (auto& [raw, entry] : entries_) {
    if (entry->segment && !entry->recorded) ::unlink(entry->segment->path.c_str());
  }
}

void SegmentCache::AdoptRecordsLocked() {
  std::vector<std::pair<uint64_t, std::unique_ptr<Entry>>> adopted;
  std::set<std::string> keep;
  for (const std::string& name : ListDir(dir_)) {
    if (name.size() < 6 || name.substr(name.size() - 5) != ".meta") continue;
    std::string meta_path = dir_ + "/" + name;
    std::ifstream in(meta_path, std::ios::binary);
    v1::SegmentRecord record;
    if (!record.ParseFromIstream(&in)) continue;
    // An index of an older daemon lacks fields a rebuild gives (paths):
    // the segment is rebuilt at its next load.
    if (record.index_version() < kIndexVersion) continue;
    // A segment of another boot may have lost pages with a power loss.
    if (record.boot_id() != boot_id_) continue;
    std::string seg_path = SegmentPath(record.generation());
    struct stat st;
    if (::stat(seg_path.c_str(), &st) != 0 ||
        static_cast<uint64_t>(st.st_size) != record.segment_size() ||
        record.index().segment_path() != seg_path) {
      continue;
    }
    auto segment = std::make_shared<Segment>();
    segment->path = seg_path;
    segment->size = record.segment_size();
    segment->generation = record.generation();
    segment->version.dev = record.dev();
    segment->version.ino = record.ino();
    segment->version.size = record.size();
    segment->version.mtime_ns = record.mtime_ns();
    segment->version.ctime_ns = record.ctime_ns();
    segment->version.raw = record.raw();
    segment->version.path = record.source_path();
    segment->version.url = record.url();
    segment->version.etag = record.etag();
    segment->index = record.index();
    auto entry = std::make_unique<Entry>();
    entry->key = segment->version.key();
    entry->segment = segment;
    entry->recorded = true;
    keep.insert(seg_path);
    keep.insert(meta_path);
    next_generation_ = std::max(next_generation_, record.generation() + 1);
    adopted.emplace_back(record.generation(), std::move(entry));
  }
  // Oldest generations first in the LRU; a newer record of the same source
  // retires an older one.
  std::sort(adopted.begin(), adopted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [generation, owned] : adopted) {
    Entry* entry = owned.get();
    entries_[entry] = std::move(owned);
    total_bytes_ += entry->segment->size;
    auto it = current_.find(entry->key);
    if (it != current_.end()) RetireLocked(it->second);
    current_[entry->key] = entry;
    lru_.push_back(entry);
    entry->lru_pos = std::prev(lru_.end());
    entry->in_lru = true;
  }
  for (const std::string& name : ListDir(dir_)) {
    std::string path = dir_ + "/" + name;
    if (keep.count(path) == 0) ::unlink(path.c_str());
  }
  if (!adopted.empty()) {
    log::Info("adopted %d cached segments (%d bytes) from %s", adopted.size(),
              total_bytes_, dir_);
  }
}

void SegmentCache::WriteRecord(const Segment& segment) {
  v1::SegmentRecord record;
  record.set_generation(segment.generation);
  record.set_segment_size(segment.size);
  record.set_source_path(segment.version.path);
  record.set_dev(segment.version.dev);
  record.set_ino(segment.version.ino);
  record.set_size(segment.version.size);
  record.set_mtime_ns(segment.version.mtime_ns);
  record.set_ctime_ns(segment.version.ctime_ns);
  record.set_raw(segment.version.raw);
  record.set_url(segment.version.url);
  record.set_etag(segment.version.etag);
  *record.mutable_index() = segment.index;
  record.set_index_version(kIndexVersion);
  record.set_boot_id(boot_id_);
  // Whole or absent (AtomicFile), and not fsynced: see boot_id.
  std::string bytes;
  absl::Status status = record.SerializeToString(&bytes)
                            ? absl::OkStatus()
                            : absl::InternalError("the record does not serialize");
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(MetaPath(segment.path));
  if (status.ok()) status = file.status();
  if (status.ok()) {
    FdSink sink(file->fd(), file->temp_path(), 4096);
    status = sink.Append(bytes);
    if (status.ok()) status = sink.Finish();
  }
  if (status.ok()) status = file->Commit(AtomicFile::Sync::kCrashAtomic);
  if (!status.ok()) {
    log::Warning("the segment of %s will not outlive this daemon: %s",
                 segment.version.path, status.message());
  }
}

namespace {

absl::Status ShuttingDown() {
  return absl::UnavailableError("persistd is shutting down");
}

// Runs a builder, turning an exception (std::bad_alloc from a huge
// allocation, say) into an error: a build must end with a status, or its
// waiters would wait forever.
absl::StatusOr<v1::LoadReply> RunBuilder(const SegmentCache::Builder& build,
                                         const std::string& path,
                                         const SegmentCache::Wanted& wanted,
                                         const std::string& source,
                                         uint64_t* size) {
  try {
    return build(path, wanted, size);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory while building the segment of ", source));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(
        "building the segment of ", source, " failed: ", e.what()));
  }
}

}  // namespace

void SegmentCache::FinishBuildLocked(Entry* entry, const std::string& path,
                                     const absl::Status& status) {
  entry->build->done = true;
  entry->build->status = status;
  built_.SignalAll();
  if (status.ok()) return;
  ::unlink(path.c_str());  // whatever the builder wrote of it
  auto it = current_.find(entry->key);
  if (it != current_.end() && it->second == entry) current_.erase(it);
  entries_.erase(entry);
}

std::string SegmentCache::SegmentPath(uint64_t generation) const {
  return absl::StrCat(dir_, "/", generation, ".seg");
}

bool SegmentCache::Refetchable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kCancelled:          // the fetcher cancelled or died
    case absl::StatusCode::kAborted:            // its session ended
    case absl::StatusCode::kDeadlineExceeded:   // it stalled, or never came
    case absl::StatusCode::kFailedPrecondition: // its staging file was wrong
      return true;
    default:
      return false;
  }
}

absl::Status SegmentCache::WaitForBuildLocked(Build* build, bool remote,
                                              const Abandoned& abandoned) {
  ++build->waiters;
  absl::Status status;
  while (!build->done && !shutting_down_) {
    // In steps: a waiter notices its own abandonment (and a claimed build
    // a ticket that lapses) without anyone waking it.
    built_.WaitWithTimeout(&mu_, kWaiterCheck);
    if (remote) LapseTicketsLocked("");
    if (build->done || !abandoned) continue;
    // Not under mu_: it may take gRPC's locks.
    mu_.Unlock();
    const bool gone = abandoned();
    mu_.Lock();
    if (gone) {
      status = absl::CancelledError(
          "the load was abandoned by its client while it waited for the "
          "segment's build");
      break;
    }
  }
  --build->waiters;
  return status;
}

SegmentCache::Wanted SegmentCache::WantedFor(std::shared_ptr<Build> build,
                                             const Abandoned& abandoned,
                                             const std::string& source) {
  if (!abandoned) return [] { return absl::OkStatus(); };
  struct State {
    absl::Time next_check = absl::InfinitePast();
    bool stopped = false;
  };
  auto state = std::make_shared<State>();
  const absl::Status stop = absl::CancelledError(absl::StrCat(
      "the segment build of ", source.empty() ? "<source>" : source,
      " stopped: every load that wanted it was abandoned"));
  return [this, build = std::move(build), abandoned = &abandoned, state,
          stop]() -> absl::Status {
    if (state->stopped) return stop;
    const absl::Time now = absl::Now();
    if (now < state->next_check) return absl::OkStatus();
    state->next_check = now + kWantedCheck;
    bool gone;
    {
      absl::MutexLock lock(&mu_);
      gone = build->builder_gone;
    }
    if (!gone && !(*abandoned)()) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    build->builder_gone = true;
    if (build->waiters > 0) return absl::OkStatus();  // built for them
    build->abandoned = true;
    state->stopped = true;
    return stop;
  };
}

absl::StatusOr<bool> SegmentCache::FindLocked(const SourceVersion& version,
                                              bool cacheable,
                                              const std::string& session,
                                              const Abandoned& abandoned,
                                              Acquired* out) {
  const SourceVersion::Key key = version.key();
  while (true) {
    if (shutting_down_) return ShuttingDown();
    if (!cacheable) return false;
    auto it = current_.find(key);
    if (it == current_.end()) return false;
    Entry* found = it->second;
    if (!found->segment) {
      // Another request is building it: wait for that build to end, and
      // share its failure (building again would fail again, and take as
      // long) -- unless it was a fetch whose client gave up or went away:
      // then the next one to come claims it again. A build stopped
      // because nobody wanted it is built again.
      std::shared_ptr<Build> theirs = found->build;
      absl::Status waited =
          WaitForBuildLocked(theirs.get(), version.remote(), abandoned);
      if (!waited.ok()) return waited;
      if (theirs->done && !theirs->status.ok() && !theirs->abandoned &&
          !(version.remote() && Refetchable(theirs->status))) {
        return theirs->status;
      }
      continue;
    }
    if (found->segment->version.Matches(version) &&
        SegmentFileMissing(found->segment->path)) {
      // Removed by hand (or by a tmp cleaner): rebuild it rather than
      // hand out a path the client cannot open.
      log::Warning("segment %s of %s is gone; rebuilding it", found->segment->path,
                   version.path);
      ::mkdir(dir_.c_str(), 0700);
      RetireLocked(found);
      return false;
    }
    if (found->segment->version.Matches(version)) {
      ++hits_;
      if (found->segment->version.ctime_ns != version.ctime_ns) {
        // First load of a file this daemon wrote: learn its ctime.
        auto learned = std::make_shared<Segment>(*found->segment);
        learned->version.ctime_ns = version.ctime_ns;
        found->segment = std::move(learned);
      }
      out->segment = found->segment;
      out->hit = true;
      if (!session.empty()) {
        out->lease_id = LeaseLocked(session, found);
      } else if (found->in_lru) {
        lru_.erase(found->lru_pos);
        lru_.push_back(found);
        found->lru_pos = std::prev(lru_.end());
      }
      return true;
    }
    // The source changed: the old segment stops being served but lives
    // on (unlinked once unleased) for the clients that map it.
    RetireLocked(found);
    return false;
  }
}

SegmentCache::Entry* SegmentCache::StartBuildLocked(const SourceVersion& version,
                                                    bool cacheable,
                                                    uint64_t* generation) {
  auto owned = std::make_unique<Entry>();
  Entry* entry = owned.get();
  entry->key = version.key();
  entry->build = std::make_shared<Build>();
  entries_[entry] = std::move(owned);
  if (cacheable) current_[entry->key] = entry;
  *generation = next_generation_++;
  return entry;
}

absl::StatusOr<SegmentCache::Acquired> SegmentCache::Acquire(
    const SourceVersion& version, bool cacheable, const Builder& build,
    const std::string& session, const Abandoned& abandoned) {
  Entry* entry = nullptr;
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    ++loads_;
    Acquired found;
    absl::StatusOr<bool> hit =
        FindLocked(version, cacheable, session, abandoned, &found);
    if (!hit.ok()) return hit.status();
    if (*hit) return found;
    entry = StartBuildLocked(version, cacheable, &generation);
  }
  return RunBuild(entry, generation, version, cacheable, build, session,
                  abandoned);
}

absl::StatusOr<SegmentCache::Claimed> SegmentCache::Claim(
    const SourceVersion& version, const std::string& session,
    const Abandoned& abandoned) {
  if (!version.remote() || session.empty()) {
    return absl::InvalidArgumentError(
        "only a remote source, loaded under a session, can be claimed");
  }
  absl::MutexLock lock(&mu_);
  ++loads_;
  Claimed claimed;
  absl::StatusOr<bool> hit =
      FindLocked(version, /*cacheable=*/true, session, abandoned, &claimed.acquired);
  if (!hit.ok()) return hit.status();
  if (*hit) return claimed;
  uint64_t generation;
  Entry* entry = StartBuildLocked(version, /*cacheable=*/true, &generation);
  static thread_local std::mt19937_64 rng(std::random_device{}());
  claimed.ticket = absl::StrFormat("T%d-%016x", generation, rng());
  tickets_[claimed.ticket] =
      Ticket{entry, generation, version, session,
             absl::Now() + absl::Seconds(kTicketLifetimeSeconds)};
  return claimed;
}

absl::StatusOr<SegmentCache::Acquired> SegmentCache::Fulfill(
    const std::string& ticket, const std::string& session,
    const FetchBuilder& build) {
  Ticket claimed;
  {
    absl::MutexLock lock(&mu_);
    LapseTicketsLocked("");
    auto it = tickets_.find(ticket);
    if (it == tickets_.end() || it->second.session != session) {
      // Not NotFound: that would read as "no such object" to the client.
      return absl::AbortedError(absl::StrCat(
          "fetch ticket ", ticket, " is unknown to this session, or lapsed (a ticket "
          "is redeemed within ", kTicketLifetimeSeconds, " s): load again"));
    }
    claimed = std::move(it->second);
    tickets_.erase(it);
    if (shutting_down_) {
      FinishBuildLocked(claimed.entry, SegmentPath(claimed.generation),
                        ShuttingDown());
      return ShuttingDown();
    }
  }
  const SourceVersion& version = claimed.version;
  // Its fetcher is its builder: the build stops when the fetcher goes
  // (its waiters then claim again), so it needs no Wanted.
  auto run = [&build, &version](const std::string& path, const Wanted&,
                                uint64_t* size) {
    return build(version, path, size);
  };
  return RunBuild(claimed.entry, claimed.generation, version, /*cacheable=*/true,
                  run, session, /*abandoned=*/nullptr);
}

void SegmentCache::LapseTicketsLocked(const std::string& session) {
  const absl::Time now = absl::Now();
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    const Ticket& t = it->second;
    const bool ended = !session.empty() && t.session == session;
    if (!ended && now < t.deadline) {
      ++it;
      continue;
    }
    const absl::Status status =
        ended ? absl::AbortedError(absl::StrCat(
                    "the client fetching ", t.version.url, " went away"))
              : absl::DeadlineExceededError(absl::StrCat(
                    "the client that was to fetch ", t.version.url,
                    " did not send it within ", kTicketLifetimeSeconds, " s"));
    log::Warning("fetch %s failed: %s", it->first, status.message());
    FinishBuildLocked(t.entry, SegmentPath(t.generation), status);
    it = tickets_.erase(it);
  }
}

absl::StatusOr<SegmentCache::Acquired> SegmentCache::RunBuild(
    Entry* entry, uint64_t generation, const SourceVersion& version,
    bool cacheable, const Builder& build, const std::string& session,
    const Abandoned& abandoned) {
  std::string path = SegmentPath(generation);
  // Ends the build however this function is left, an exception included.
  class Finisher {
   public:
    Finisher(SegmentCache* cache, Entry* entry, const std::string& path)
        : cache_(cache), entry_(entry), path_(path) {}
    ~Finisher() {
      if (entry_ == nullptr) return;
      absl::MutexLock lock(&cache_->mu_);
      cache_->FinishBuildLocked(
          entry_, path_, absl::InternalError("the segment build was abandoned"));
    }
    void Done() { entry_ = nullptr; }

   private:
    SegmentCache* const cache_;
    Entry* entry_;
    const std::string& path_;
  } finisher(this, entry, path);

  Wanted wanted;
  {
    absl::MutexLock lock(&mu_);
    wanted = WantedFor(entry->build, abandoned, version.path);
  }
  uint64_t size = 0;
  absl::StatusOr<v1::LoadReply> index =
      RunBuilder(build, path, wanted, version.path, &size);
  std::shared_ptr<Segment> segment;
  if (index.ok()) {
    segment = std::make_shared<Segment>();
    segment->path = path;
    segment->size = size;
    segment->generation = generation;
    segment->version = version;
    segment->index = *std::move(index);
    if (cacheable) WriteRecord(*segment);
  }

  absl::MutexLock lock(&mu_);
  finisher.Done();
  if (index.ok()) {
    entry->segment = segment;
    entry->current = cacheable;
    entry->recorded = cacheable;
    total_bytes_ += size;
  }
  FinishBuildLocked(entry, path, index.status());
  if (!index.ok()) return index.status();

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

void SegmentCache::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  built_.SignalAll();
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
  LapseTicketsLocked(session);
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
    ::unlink(MetaPath(entry->segment->path).c_str());
    total_bytes_ -= entry->segment->size;
  }
  entries_.erase(entry);
}

void SegmentCache::EvictToBudgetLocked() {
  while (total_bytes_ > budget_ && !lru_.empty()) {
    Entry* victim = lru_.front();
    ++evictions_;
    if (victim->segment) {
      log::Info("evicted the segment of %s (%d bytes, least recently used) to keep "
                "the cache within its budget of %d bytes",
                victim->segment->version.path.empty() ? "<unnamed>"
                                                      : victim->segment->version.path,
                victim->segment->size, budget_);
    }
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

std::vector<SegmentCache::Listing> SegmentCache::List() const {
  absl::MutexLock lock(&mu_);
  std::map<const Entry*, std::vector<std::string>> sessions;
  for (const auto& [lease_id, lease] : leases_) {
    sessions[lease.entry].push_back(lease.session);
  }
  std::vector<Listing> out;
  auto add = [&](const Entry* entry) {
    Listing listing;
    listing.segment = entry->segment;
    listing.current = entry->current;
    auto it = sessions.find(entry);
    if (it != sessions.end()) listing.lease_sessions = it->second;
    out.push_back(std::move(listing));
  };
  for (const Entry* entry : lru_) add(entry);
  for (const auto& [raw, entry] : entries_) {
    if (entry->segment && !entry->in_lru) add(entry.get());
  }
  return out;
}

SegmentCache::Evicted SegmentCache::Evict(
    const std::function<bool(const Segment&)>& match) {
  absl::MutexLock lock(&mu_);
  std::vector<Entry*> victims;
  for (const auto& [raw, entry] : entries_) {
    if (entry->segment && entry->current && match(*entry->segment)) {
      victims.push_back(entry.get());
    }
  }
  Evicted evicted;
  for (Entry* entry : victims) {
    evicted.segments.push_back(entry->segment);
    if (entry->leases > 0) {
      ++evicted.pending;
    } else {
      evicted.freed_bytes += entry->segment->size;
    }
    ++evictions_;
    RetireLocked(entry);  // removes it now unless leased
  }
  return evicted;
}

}  // namespace persistd
