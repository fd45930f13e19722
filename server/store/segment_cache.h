// SegmentCache owns the decompressed, indexed copies of source files
// ("segments") in <store>/segments, the leases clients hold on them, and
// their eviction.
//
// A segment is immutable once published: it is written completely under a
// fresh name before any client learns of it, never modified, and on
// eviction or invalidation only unlinked -- so a client's mapping stays
// valid (and never SIGBUSes) however long it lives.
//
// Invariants (all under mu_):
//  - current_ maps a source identity to the segment serving its latest
//    known version; a segment is in lru_ iff it is current and unleased.
//  - total_bytes_ is the size of every segment file that exists.
//  - a building entry has no segment yet and a Build record; concurrent
//    requests for the same source wait for that one build instead of
//    decompressing again. Every build ends -- with a segment, an error or
//    an exception -- by setting its Build's done, removing a failed entry
//    (and its file) and waking all waiters, so no request waits on a build
//    that will not finish; the waiters of a failed build return its error,
//    and a request that comes later builds again.
//  - a remote source (an object-store object, SourceVersion::url set) is
//    never read by the daemon: its build is *claimed* by one client
//    (Claim), which fetches the bytes and feeds the build (Fulfill). A
//    claimed build that is not fulfilled is in tickets_, and leaves it
//    when it is fulfilled, or fails once its session ends or its ticket
//    lapses (kTicketLifetime) -- so waiting for a claimed build ends too.
//    When a remote build fails because its fetcher gave up or went away
//    (Refetchable), its waiters claim again: one becomes the fetcher.
//  - a build stops when nobody wants it any more: once the request that
//    runs it and every request waiting for it have been abandoned by
//    their clients (Abandoned: a cancelled or timed-out call, a client
//    gone), its builder's Wanted says so and the build fails like any
//    other -- no file, no record, waiters woken -- but as `abandoned`: a
//    request that came meanwhile builds again instead of sharing that
//    failure. While any requester remains the build goes on, for it. A
//    waiter notices its own abandonment within kWaiterCheck and stops
//    waiting (Build::waiters counts those that have not).
//  - once shutting_down_ is set, no request waits or starts a build.
//
// Thread-safe.
#ifndef PERSISTD_SERVER_STORE_SEGMENT_CACHE_H_
#define PERSISTD_SERVER_STORE_SEGMENT_CACHE_H_

#include <climits>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/persistd.pb.h"

namespace persistd {

// What identifies one version of a source: a file (dev, ino, size, mtime,
// ctime), or an object-store object (url, and its store's etag or version
// id with its size; its last-modified when the store reports neither).
struct SourceVersion {
  // A ctime not known yet: a file this daemon wrote is linked and renamed
  // into place by its client afterwards, which changes its ctime.
  static constexpr int64_t kUnknownCtime = INT64_MIN;

  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  bool raw = false;  // LoadRequest.raw gives a different segment
  std::string path;  // informational (records, logs); not part of identity
  // A remote source: its URL (with protocol) and etag; dev and ino are 0.
  std::string url;
  std::string etag;

  // Which source (any version): the cache's key.
  using Key = std::tuple<uint64_t, uint64_t, bool, std::string>;
  Key key() const { return Key(dev, ino, raw, url); }
  bool remote() const { return !url.empty(); }

  bool SameFile(const SourceVersion& o) const { return key() == o.key(); }
  // Whether `observed` (a fresh fstat, or the store's report) is this
  // version: equal, or equal but for the ctime this version does not know
  // yet. An object's etag says it all; its last-modified counts without.
  bool Matches(const SourceVersion& observed) const {
    if (!SameFile(observed) || size != observed.size || etag != observed.etag) {
      return false;
    }
    if (remote() && !etag.empty()) return true;
    return mtime_ns == observed.mtime_ns &&
           (ctime_ns == kUnknownCtime || ctime_ns == observed.ctime_ns);
  }
};

struct Segment {
  std::string path;
  uint64_t size = 0;
  uint64_t generation = 0;
  SourceVersion version;
  // The reply for this segment, without lease or cache-hit fields.
  v1::LoadReply index;
};

class SegmentCache {
 public:
  // Whether the client of a request has abandoned it (cancelled its call,
  // let its deadline pass, or died). Asked only on the request's own
  // thread, every few ms while it builds or waits; null: never abandoned.
  using Abandoned = std::function<bool()>;
  // Given to a builder, to ask as it works (it is cheap: it answers from
  // a clock between checks): OK while some request still wants the build,
  // CancelledError once none does -- the builder then returns that error.
  using Wanted = std::function<absl::Status()>;
  // Writes the segment file at `path` and returns its index.
  using Builder = std::function<absl::StatusOr<v1::LoadReply>(
      const std::string& path, const Wanted& wanted, uint64_t* size)>;
  // The same for a claimed build, told which version it builds. (It needs
  // no Wanted: its fetcher feeds it, and it stops when its fetcher goes.)
  using FetchBuilder = std::function<absl::StatusOr<v1::LoadReply>(
      const SourceVersion& version, const std::string& path, uint64_t* size)>;

  // How often a waiting request checks whether it was abandoned, and a
  // build whether anyone still wants it.
  static constexpr absl::Duration kWaiterCheck = absl::Milliseconds(20);
  static constexpr absl::Duration kWantedCheck = absl::Milliseconds(5);

  // How long a claimed build waits for its fetcher's Fulfill.
  static constexpr int kTicketLifetimeSeconds = 30;

  // What a built index holds, recorded with each segment: bumped when the
  // builder's LoadReply gains a field that older records lack (1:
  // LoadArray.path), so that records of older daemons are not adopted.
  static constexpr uint32_t kIndexVersion = 1;

  // `dir` must exist. Segments recorded there by an earlier run are adopted
  // (unleased, least recently used first); anything else there -- a
  // segment whose build a crash interrupted, a stray file -- is deleted.
  SegmentCache(std::string dir, uint64_t budget_bytes);
  ~SegmentCache();
  SegmentCache(const SegmentCache&) = delete;
  SegmentCache& operator=(const SegmentCache&) = delete;

  struct Acquired {
    std::shared_ptr<const Segment> segment;
    std::string lease_id;  // empty without a session
    bool hit = false;      // served without a build
  };
  // Returns the segment for `version`, building it with `build` if the
  // cache has none for this exact version, and leases it to `session`
  // (when not empty) before anything can evict it. A version that is not
  // `cacheable` (the bytes of a file object) always gets a fresh segment.
  // Once `abandoned` says so, the request stops waiting (CancelledError),
  // and a build it runs stops unless another request waits for it.
  absl::StatusOr<Acquired> Acquire(const SourceVersion& version,
                                   bool cacheable, const Builder& build,
                                   const std::string& session,
                                   const Abandoned& abandoned);

  // For a remote source (`version.url` set), which the daemon cannot read:
  // its segment, leased to `session` (which must not be empty), when one is
  // cached or being built (waiting for that build); otherwise a claim:
  // a build registered for `version` that the caller's client is to feed,
  // named by `ticket` (and no segment). Other requests for the version
  // wait for that build (until `abandoned`, as in Acquire).
  struct Claimed {
    Acquired acquired;   // its segment is null when `ticket` is set
    std::string ticket;
  };
  absl::StatusOr<Claimed> Claim(const SourceVersion& version,
                                const std::string& session,
                                const Abandoned& abandoned);
  // Runs the build `session` claimed under `ticket` with `build`, and
  // leases the segment to `session`. Aborted for a ticket that is unknown,
  // lapsed, fulfilled already or another session's.
  absl::StatusOr<Acquired> Fulfill(const std::string& ticket,
                                   const std::string& session,
                                   const FetchBuilder& build);
  // Whether a remote build that failed with `status` failed because its
  // fetcher gave up or went away (the object may be fine): its waiters
  // claim again instead of sharing the failure.
  static bool Refetchable(const absl::Status& status);

  void Release(const std::string& session, const std::string& lease_id);
  // Drops the session's leases, and fails the builds it claimed and has
  // not fulfilled.
  void EndSession(const std::string& session);

  // Makes every request waiting for a build, and every later Acquire,
  // return Unavailable, so the daemon can stop however long a build takes.
  // Builds already running finish (or fail) on their own.
  void Shutdown();

  struct Stats {
    uint32_t segments = 0;
    uint32_t leased_segments = 0;
    uint64_t bytes = 0;
    uint64_t budget = 0;
    uint64_t loads = 0;
    uint64_t hits = 0;
    uint64_t evictions = 0;
  };
  Stats stats() const;

  // -- administration (persistctl cache ls / evict) --------------------------
  struct Listing {
    std::shared_ptr<const Segment> segment;
    bool current = false;  // serves loads of its source
    std::vector<std::string> lease_sessions;  // one entry per lease
  };
  // Every built segment, current ones first in LRU order (least recent
  // first), then those waiting for their last lease.
  std::vector<Listing> List() const;

  struct Evicted {
    std::vector<std::shared_ptr<const Segment>> segments;
    uint32_t pending = 0;      // leased: their files go with the last lease
    uint64_t freed_bytes = 0;  // deleted now
  };
  // Stops serving every current segment for which `match` is true (called
  // under the cache's lock: keep it cheap, no I/O). The next load of its
  // source builds a new segment; clients that map it keep their mapping.
  Evicted Evict(const std::function<bool(const Segment&)>& match);

 private:
  // How one build ended, for the requests that waited for it.
  struct Build {
    bool done = false;
    absl::Status status;  // when done: OK, or why the build failed
    // Requests waiting for it that have not been abandoned.
    int waiters = 0;
    // The request running it was abandoned: it builds on for its waiters.
    bool builder_gone = false;
    // Stopped because nobody wanted it (set with builder_gone and no
    // waiters, for good): later requests build again.
    bool abandoned = false;
  };

  struct Entry {
    std::shared_ptr<const Segment> segment;  // null while building
    std::shared_ptr<Build> build;            // while building (and after)
    int leases = 0;
    bool current = true;  // serves the newest version of its source
    SourceVersion::Key key;
    std::list<Entry*>::iterator lru_pos;
    bool in_lru = false;
    bool recorded = false;  // has a .meta file
  };

  std::string LeaseLocked(const std::string& session, Entry* entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLeaseLocked(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RetireLocked(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictToBudgetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdoptRecordsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes <generation>.meta so the segment survives a restart.
  void WriteRecord(const Segment& segment);
  // Ends the build of `entry` (at `path`) with `status`: marks its Build
  // done and wakes the waiters; a failed entry goes, with its file, so the
  // next request builds again.
  void FinishBuildLocked(Entry* entry, const std::string& path,
                         const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The lookup of Acquire and Claim: true with *out filled when a segment
  // serves `version` (waiting for a build in progress first); false when
  // the caller is to build it (an entry of a changed source is retired).
  absl::StatusOr<bool> FindLocked(const SourceVersion& version, bool cacheable,
                                  const std::string& session,
                                  const Abandoned& abandoned, Acquired* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for `build` to end, as one of its waiters, unless `abandoned`
  // first (CancelledError) or the cache shuts down.
  absl::Status WaitForBuildLocked(Build* build, bool remote,
                                  const Abandoned& abandoned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The Wanted of the build of `build`, run for a request that `abandoned`
  // watches.
  Wanted WantedFor(std::shared_ptr<Build> build, const Abandoned& abandoned,
                   const std::string& source);
  // A new entry, building, for `version`; current when `cacheable`.
  Entry* StartBuildLocked(const SourceVersion& version, bool cacheable,
                          uint64_t* generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `build` for `entry` (see Acquire) and ends its build.
  absl::StatusOr<Acquired> RunBuild(Entry* entry, uint64_t generation,
                                    const SourceVersion& version, bool cacheable,
                                    const Builder& build, const std::string& session,
                                    const Abandoned& abandoned);
  // Fails the claimed builds whose ticket lapsed (all of `session`'s when
  // it is not empty).
  void LapseTicketsLocked(const std::string& session)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string SegmentPath(uint64_t generation) const;

  const std::string dir_;
  const uint64_t budget_;
  const std::string boot_id_;  // written into records; adopts only its own

  mutable absl::Mutex mu_;
  absl::CondVar built_;
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_lease_ ABSL_GUARDED_BY(mu_) = 1;
  // Source key -> the entry serving (or building) the newest version.
  std::map<SourceVersion::Key, Entry*> current_ ABSL_GUARDED_BY(mu_);
  // Claimed builds waiting for their fetcher, by ticket.
  struct Ticket {
    Entry* entry;
    uint64_t generation;
    SourceVersion version;
    std::string session;
    absl::Time deadline;
  };
  std::map<std::string, Ticket> tickets_ ABSL_GUARDED_BY(mu_);
  std::map<Entry*, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::list<Entry*> lru_ ABSL_GUARDED_BY(mu_);  // front = least recently used
  struct LeaseRecord {
    std::string session;
    Entry* entry;
  };
  std::map<std::string, LeaseRecord> leases_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<std::string>> sessions_ ABSL_GUARDED_BY(mu_);
  uint64_t total_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t loads_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_SEGMENT_CACHE_H_
