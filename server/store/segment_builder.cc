#include "server/store/segment_builder.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/codec/codec.h"
#include "server/format/joblib_reader.h"
#include "server/format/pickle_limits.h"
#include "server/format/pickle_opcodes.h"
#include "server/format/pickle_scanner.h"
#include "server/format/symbolic_stack.h"
#include "server/io/atomic_file.h"
#include "server/io/errno_status.h"
#include "server/io/growable_buffer.h"
#include "server/io/scoped_fd.h"

namespace persistd {

namespace {

PickleLimits default_build_limits;  // see SetDefaultBuildLimits

// How much of the source one pread reads: large enough that syscalls do
// not matter, small enough to stay in cache while the decoder reads it.
constexpr size_t kReadSize = size_t{2} << 20;
// The segment file is preallocated ahead of the writes in steps that grow
// with it, from kMinPreallocate to kPreallocateStep: large files get long
// extents, and a small one never asks for 64 MiB (which made an 8 KB load
// fail on a nearly full disk, and cost a millisecond per small build).
constexpr uint64_t kMinPreallocate = uint64_t{64} << 10;
constexpr uint64_t kPreallocateStep = uint64_t{64} << 20;
// joblib < 0.10 'ZF' header: 'ZF' + the hex length padded to 19 bytes, one
// more space for py2 joblib <= 0.8.4.
constexpr size_t kZFileMaxLen = 19;
constexpr size_t kHeadSize = 2 + kZFileMaxLen + 1 + 8;

uint64_t AlignUp(uint64_t n, uint64_t alignment = kSegmentAlignment) {
  return (n + alignment - 1) / alignment * alignment;
}

absl::Status Annotate(const std::string& name, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(name, ": ", status.message()));
}

// Reads exactly [offset, offset + size) of `fd` into `out`.
absl::Status PreadExactly(int fd, uint64_t offset, size_t size, char* out,
                          const std::string& name, uint64_t file_size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done,
                        static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read", name, errno);
    }
    if (n == 0) {
      return absl::AbortedError(absl::StrCat(
          name, " shrank while it was being read (", offset + done, " of ",
          file_size, " bytes); another program is writing it: retry when it "
          "is done"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// cachestat(2) (Linux 6.5): how much of a file range is in the page cache,
// without mapping it. Not in every libc's headers yet.
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct CachestatRange {
  uint64_t off;
  uint64_t len;  // 0: to the end of the file
};
struct Cachestat {
  uint64_t nr_cache;
  uint64_t nr_dirty;
  uint64_t nr_writeback;
  uint64_t nr_evicted;
  uint64_t nr_recently_evicted;
};

// Whether [start, end) of `fd` is mostly absent from the page cache (false
// when the kernel cannot tell).
bool MostlyUncached(int fd, uint64_t start, uint64_t end) {
  CachestatRange range{start, end - start};
  Cachestat stat{};
  if (::syscall(__NR_cachestat, fd, &range, &stat, 0) != 0) return false;
  const uint64_t pages = (end - start + 4095) / 4096;
  return stat.nr_cache * 10 < pages;
}

// The source read with pread, piece by piece, into one reusable buffer.
// Never mapped: a source truncated under us is an error, not a SIGBUS.
//
// With drop_behind, the pages read are dropped from the page cache once
// the decoder is done with them: a compressed source that was not cached is
// read once per version (the segment is the cached form), and caching it
// would double the memory a load costs; its freed pages are the first that
// the segment's writes reuse.
class FileSource : public ByteSource {
 public:
  FileSource(int fd, uint64_t start, uint64_t end, const std::string& name,
             bool drop_behind)
      : fd_(fd), pos_(start), end_(end), name_(name),
        buffer_(new char[kReadSize]), drop_behind_(drop_behind),
        dropped_(start) {}
  ~FileSource() override { DropBehind(); }

  // Makes Read report the end of the input from now on (used for
  // uncompressed sources once the pickle's STOP has been seen).
  void StopEarly() { end_ = std::min(end_, pos_); }

  absl::StatusOr<absl::string_view> Read() override {
    DropBehind();  // the last piece is consumed
    if (pos_ >= end_) return absl::string_view();
    size_t n = static_cast<size_t>(std::min<uint64_t>(kReadSize, end_ - pos_));
    absl::Status status = PreadExactly(fd_, pos_, n, buffer_.get(), name_, end_);
    if (!status.ok()) return error_ = status;
    pos_ += n;
    return absl::string_view(buffer_.get(), n);
  }

  // The error Read returned, if any.
  const absl::Status& error() const { return error_; }

 private:
  void DropBehind() {
    if (!drop_behind_ || pos_ <= dropped_) return;
    ::posix_fadvise(fd_, static_cast<off_t>(dropped_),
                    static_cast<off_t>(pos_ - dropped_), POSIX_FADV_DONTNEED);
    dropped_ = pos_ / 4096 * 4096;  // the partly read page goes next time
  }

  const int fd_;
  uint64_t pos_;
  uint64_t end_;
  const std::string& name_;
  std::unique_ptr<char[]> buffer_;
  const bool drop_behind_;
  uint64_t dropped_;
  absl::Status error_;
};

// Writes the segment file, preallocating it ahead of the writes so that a
// full disk fails the build, never a client's page fault.
//
// Writes are gathered into whole blocks of kWriteBlock bytes at
// kWriteBlock-aligned offsets before they reach the file: the page cache
// then holds the segment in folios the size of a huge page (2 MiB), which a
// client maps with one PMD entry each -- touching a 500 MB model costs
// about 250 faults instead of 8000 with fault-around (and the many more
// that small folios written at unaligned offsets cost).
//
// Writes are expected in increasing offset order (the builders write that
// way); one behind the buffer is written through, correctly but unbuffered.
//
// Invariant: buffer_[0, fill_) holds the bytes of [start_, start_ + fill_)
// not yet in the file; start_ is kWriteBlock-aligned unless a write went
// backwards; end_ is one past the last byte written (buffered or not).
class SegmentWriter {
 public:
  static constexpr uint64_t kWriteBlock = uint64_t{2} << 20;

  SegmentWriter(int fd, const std::string& path)
      : fd_(fd), path_(path), buffer_(new char[kWriteBlock]) {}

  absl::Status WriteAt(uint64_t offset, absl::string_view data) {
    if (data.empty()) return absl::OkStatus();
    end_ = std::max<uint64_t>(end_, offset + data.size());
    if (offset < start_) {  // behind the buffer: straight to the file
      const size_t n = static_cast<size_t>(
          std::min<uint64_t>(data.size(), start_ - offset));
      absl::Status status = Pwrite(offset, data.substr(0, n));
      if (!status.ok()) return status;
      data.remove_prefix(n);
      offset += n;
    }
    while (!data.empty()) {
      if (offset >= start_ + kWriteBlock) {
        // Past this block: write it out and start the one holding offset.
        absl::Status status = Flush();
        if (!status.ok()) return status;
        start_ = offset / kWriteBlock * kWriteBlock;
      }
      const size_t at = static_cast<size_t>(offset - start_);
      if (at > fill_) memset(buffer_.get() + fill_, 0, at - fill_);  // a gap
      const size_t n = std::min<size_t>(data.size(), kWriteBlock - at);
      memcpy(buffer_.get() + at, data.data(), n);
      fill_ = std::max(fill_, at + n);
      data.remove_prefix(n);
      offset += n;
      if (fill_ == kWriteBlock) {
        absl::Status status = Flush();
        if (!status.ok()) return status;
        start_ += kWriteBlock;
      }
    }
    return absl::OkStatus();
  }

  // Writes out what is buffered and sets the file's final size (dropping
  // preallocated blocks beyond it).
  absl::Status Finish(uint64_t size) {
    absl::Status status = Flush();
    if (status.ok()) status = Preallocate(size);
    if (!status.ok()) return status;
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return ErrnoStatus("truncate segment", path_, errno);
    }
    return absl::OkStatus();
  }

  // Forgets everything written (the file is emptied).
  absl::Status Reset() {
    start_ = fill_ = end_ = allocated_ = 0;
    if (::ftruncate(fd_, 0) != 0) return ErrnoStatus("truncate segment", path_, errno);
    return absl::OkStatus();
  }

  // One past the last byte written.
  uint64_t end() const { return end_; }

 private:
  // Writes buffer_[0, fill_) at start_ and empties the buffer.
  absl::Status Flush() {
    absl::Status status = Pwrite(start_, absl::string_view(buffer_.get(), fill_));
    fill_ = 0;
    return status;
  }

  absl::Status Pwrite(uint64_t offset, absl::string_view data) {
    if (data.empty()) return absl::OkStatus();
    absl::Status status = Preallocate(offset + data.size());
    if (!status.ok()) return status;
    while (!data.empty()) {
      ssize_t n = ::pwrite(fd_, data.data(), data.size(),
                           static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOSPC || errno == EDQUOT) {
          return NoSpace(offset + data.size(), errno);
        }
        return ErrnoStatus("write segment", path_, errno);
      }
      data.remove_prefix(static_cast<size_t>(n));
      offset += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }

  absl::Status Preallocate(uint64_t end) {
    if (end <= allocated_) return absl::OkStatus();
    const uint64_t step =
        std::clamp<uint64_t>(allocated_, kMinPreallocate, kPreallocateStep);
    uint64_t target = AlignUp(end, step);
    int rc = ::posix_fallocate(fd_, static_cast<off_t>(allocated_),
                               static_cast<off_t>(target - allocated_));
    if ((rc == ENOSPC || rc == EDQUOT) && target > AlignUp(end, 4096)) {
      // The step ran past the free space: ask for what the bytes written
      // need, so a segment that fits is never refused.
      target = AlignUp(end, 4096);
      rc = ::posix_fallocate(fd_, static_cast<off_t>(allocated_),
                             static_cast<off_t>(target - allocated_));
    }
    if (rc == ENOSPC || rc == EDQUOT) return NoSpace(end, rc);
    if (rc != 0) {
      return ErrnoStatus(absl::StrCat("preallocate ", target, " bytes for segment"),
                         path_, rc);
    }
    allocated_ = target;
    return absl::OkStatus();
  }

  // The error for a full disk (or quota), naming the store and the way
  // out: the segment needs `end` bytes so far.
  absl::Status NoSpace(uint64_t end, int error) const {
    struct statvfs fs;
    std::string free_text = "unknown";
    if (::fstatvfs(fd_, &fs) == 0) {
      free_text = absl::StrCat(static_cast<uint64_t>(fs.f_bavail) *
                               static_cast<uint64_t>(fs.f_frsize));
    }
    // Where the segment file really is (an unnamed O_TMPFILE included):
    // what /proc says of the descriptor.
    std::string where = "(in memory)";
    char target[4096];
    const ssize_t n =
        ::readlink(absl::StrCat("/proc/self/fd/", fd_).c_str(), target,
                   sizeof(target) - 1);
    if (n > 0 && target[0] == '/' &&
        !absl::StartsWith(absl::string_view(target, n), "/memfd:")) {
      where = DirName(std::string(target, n));
    }
    return absl::ResourceExhaustedError(absl::StrCat(
        "no space left in the store ", where, ": ", strerror(error),
        " while writing a segment of ", end, " bytes (", free_text,
        " bytes free); free space there or set --cache-bytes lower so the "
        "daemon keeps fewer cached segments"));
  }

  const int fd_;
  const std::string& path_;
  std::unique_ptr<char[]> buffer_;
  uint64_t start_ = 0;
  size_t fill_ = 0;
  uint64_t end_ = 0;
  uint64_t allocated_ = 0;
};


// Finds the raw arrays of a joblib stream while its bytes arrive, as
// IndexJoblibStream finds them (it stays the authority: the build checks
// its result against this one), without the array data: that is skipped,
// never read, so the buffer may hold zeros there. Each Advance resumes
// where the last one stopped, so the stream is scanned once however it is
// cut, and a byte that makes the stream invalid is reported as soon as it
// has arrived -- not after the rest of a decompression bomb has.
//
// Invariant: everything before frontier_ is classified: pickle opcodes
// (and padding and object-array pickles) or the data of arrays_, which are
// in stream order; frontier_ may lie past the bytes seen when the last
// array's data does. step_ says what comes at frontier_ (or, for kPickle,
// at scanner_'s position, which is frontier_ after each Advance).
class LayoutProbe {
 public:
  struct Array {
    uint64_t start;
    uint64_t length;
  };

  explicit LayoutProbe(const PickleLimits& limits)
      : budget_(limits.max_index_memory), stack_(&budget_) {}
  LayoutProbe(const LayoutProbe&) = delete;
  LayoutProbe& operator=(const LayoutProbe&) = delete;

  // Continues over `prefix`, the stream received so far: the prefix of the
  // last call and what arrived since. OK when it has classified all it can
  // and needs more bytes (or has seen the STOP); otherwise the error the
  // stream has whatever follows, as the indexer words it.
  absl::Status Advance(absl::string_view prefix) {
    scanner_.Rebase(prefix);
    if (nested_) nested_->Rebase(prefix);
    const uint64_t size = prefix.size();
    while (!stopped_) {
      switch (step_) {
        case Step::kStart: {
          absl::Status status = CheckPickleStart(prefix);
          if (!status.ok()) return status;
          if (size < 2) return absl::OkStatus();  // the protocol may follow
          step_ = Step::kPickle;
          break;
        }
        case Step::kPickle: {
          absl::Status status = Pickle();
          frontier_ = std::max(frontier_, scanner_.position());
          if (!status.ok()) {
            return scanner_.truncated() ? absl::OkStatus() : status;
          }
          break;
        }
        case Step::kObjectStream: {
          PickleOp inner;
          absl::Status status = nested_->Next(&inner);
          if (!status.ok()) {
            if (nested_->truncated()) return absl::OkStatus();
            return absl::DataLossError(absl::StrCat(
                status.message(), " (in the object array stream that starts "
                                  "at offset ", frontier_, ")"));
          }
          if (inner.code == pickle_op::kStop) {
            scanner_.Seek(inner.end());
            frontier_ = inner.end();
            nested_.reset();
            step_ = Step::kPickle;
          }
          break;
        }
        case Step::kPadding: {
          const uint64_t pos = frontier_;
          if (pos >= size) return absl::OkStatus();
          const uint8_t pad = static_cast<uint8_t>(prefix[pos]);
          if (pad < 1 || pad > layout_.alignment) {
            return absl::DataLossError(absl::StrFormat(
                "invalid array padding length %d at offset %d", pad, pos));
          }
          if (pad > size - pos - 1) return absl::OkStatus();
          for (uint64_t i = pos + 1; i <= pos + pad; ++i) {
            if (static_cast<uint8_t>(prefix[i]) != 0xff) {
              return absl::DataLossError(absl::StrFormat(
                  "invalid array padding byte at offset %d", i));
            }
          }
          absl::Status status = StartData(pos + 1 + pad);
          if (!status.ok()) return status;
          break;
        }
        case Step::kData: {
          const Array& a = arrays_.back();
          if (a.length > size - std::min(size, a.start)) {
            return absl::OkStatus();  // its data is still coming
          }
          scanner_.Seek(a.start + a.length);
          step_ = Step::kPickle;
          break;
        }
      }
    }
    return absl::OkStatus();
  }

  const std::vector<Array>& arrays() const { return arrays_; }
  uint64_t frontier() const { return frontier_; }
  bool stopped() const { return stopped_; }

 private:
  enum class Step { kStart, kPickle, kObjectStream, kPadding, kData };

  // Runs the pickle to its next array (then sets step_ for the data), its
  // STOP, or an error.
  absl::Status Pickle() {
    while (true) {
      PickleOp op;
      SymbolicStack::Event event;
      absl::Status status = stack_.Run(&scanner_, &op, &event);
      if (!status.ok()) return status;
      if (event == SymbolicStack::Event::kStop) {
        stopped_ = true;
        return absl::OkStatus();
      }
      if (event != SymbolicStack::Event::kWrapperBuild) continue;
      const WrapperBuild& build = stack_.build();
      if (build.klass != WrapperClass::kNumpyArrayWrapper) continue;
      if (scanner_.InFrame()) {
        return PickleCorrupt(
            "the frame does not end at the NumpyArrayWrapper's BUILD",
            op.offset);
      }
      layout_ = build.layout;
      build_end_ = op.end();
      frontier_ = build_end_;
      if (layout_.object) {
        nested_.emplace(scanner_.data(), build_end_);
        step_ = Step::kObjectStream;
        return absl::OkStatus();
      }
      if (layout_.padded) {
        step_ = Step::kPadding;
        return absl::OkStatus();
      }
      return StartData(build_end_);
    }
  }

  // The raw data of the current wrapper starts at `start`.
  absl::Status StartData(uint64_t start) {
    if (layout_.too_large || layout_.nbytes > UINT64_MAX - start) {
      return ArrayDataPastEnd(build_end_);
    }
    if (!ReserveCharged(&budget_, &arrays_, arrays_.size() + 1)) {
      return IndexMemoryExceeded(budget_.limit(), "the list of arrays", start);
    }
    arrays_.push_back({start, layout_.nbytes});
    frontier_ = start + layout_.nbytes;
    step_ = Step::kData;
    return absl::OkStatus();
  }

  MemoryBudget budget_;
  SymbolicStack stack_;
  PickleScanner scanner_{absl::string_view()};
  std::optional<PickleScanner> nested_;  // kObjectStream only
  Step step_ = Step::kStart;
  ArrayLayout layout_;      // the wrapper whose data comes next
  uint64_t build_end_ = 0;  // where its BUILD ends
  std::vector<Array> arrays_;
  uint64_t frontier_ = 0;
  bool stopped_ = false;
};

// Receives the decoded stream in order and lays it out in the segment as it
// arrives, so the decompressed bytes are written once, straight from the
// decoder's buffer, and never held in memory whole:
//  - each raw array's data at stream offset + shift, the shift (growing by
//    less than 64 bytes per array) making the segment offset 64-byte
//    aligned;
//  - everything else (pickle opcodes, padding, object-array pickles) at
//    stream offset + the shift of the array before it, and also into a
//    sparse copy of the stream (`stream_`) for the indexer, which reads only
//    those bytes.
// Which bytes are array data is learned by a LayoutProbe that follows the
// stream as it arrives; bytes not classified yet wait in `stream_` and are
// written when the probe classifies them. The pickle part (all but raw
// array data) may not outgrow limits.max_pickle_bytes, and the probe's
// memory is bounded by limits.max_index_memory.
//
// In raw mode (LoadRequest.raw) everything is written at its offset.
//
// Invariants: bytes in [0, frontier_) are classified and, up to received_,
// written to the segment (array data only there; the rest also in stream_);
// bytes in [frontier_, received_) are in stream_ only. When frontier_ >
// received_, [received_, frontier_) is the rest of arrays_.back().
// array_bytes_ is the total length of arrays_.
class LayoutSink : public ByteSink {
 public:
  struct Array {
    uint64_t start;
    uint64_t length;
    uint64_t shift;
  };

  LayoutSink(SegmentWriter* writer, bool raw, const PickleLimits& limits)
      : writer_(writer), limits_(limits) {
    if (raw) {
      arrays_.push_back({0, UINT64_MAX, 0});
      frontier_ = UINT64_MAX;
    } else {
      probe_ = std::make_unique<LayoutProbe>(limits);
    }
  }

  absl::Status Append(absl::string_view data) override {
    if (!error_.ok()) return error_;
    absl::Status status = AppendPieces(data);
    if (status.ok()) status = Classify();
    if (!status.ok()) error_ = status;
    return status;
  }

  absl::Status Finish() override { return absl::OkStatus(); }

  // Lets the probe classify what has arrived. Returns the first error of
  // the stream (or of the segment) as soon as it is known.
  absl::Status Classify() {
    if (!error_.ok()) return error_;
    if (stopped_ || frontier_ >= received_ || probe_ == nullptr) {
      return absl::OkStatus();
    }
    absl::Status status = stream_.Reserve(received_);
    if (!status.ok()) return error_ = status;
    status = probe_->Advance(stream_.view(0, received_));
    if (status.ok()) {
      // Array bytes not received yet are not in received_ either.
      const uint64_t missing =
          frontier_ > received_ ? frontier_ - received_ : 0;
      const uint64_t pickle_bytes = received_ - (array_bytes_ - missing);
      if (pickle_bytes > limits_.max_pickle_bytes) {
        status = PickleBytesExceeded(limits_.max_pickle_bytes, received_);
      }
    }
    if (!status.ok()) {
      content_error_ = true;
      return error_ = status;
    }
    status = Apply();
    if (!status.ok()) error_ = status;
    return status;
  }

  // Frees the probe (its stack and memo) once the stream is all here, so
  // that the indexer does not need memory beside it.
  void DropProbe() { probe_.reset(); }

  bool stopped() const { return stopped_; }
  // Whether the last byte received is a STOP opcode: a stream that ends
  // like this may end the pickle.
  bool last_byte_is_stop() const { return last_byte_ == pickle_op::kStop; }
  const absl::Status& error() const { return error_; }
  // Whether error() is about the stream's content, not the segment.
  bool content_error() const { return content_error_; }
  uint64_t received() const { return received_; }
  uint64_t frontier() const { return frontier_; }
  const std::vector<Array>& arrays() const { return arrays_; }

  // The decoded stream with only its non-array bytes present.
  absl::StatusOr<absl::string_view> SparseStream() {
    absl::Status status = stream_.Reserve(received_);
    if (!status.ok()) return status;
    return stream_.view(0, received_);
  }

  // The shift of the bytes at stream offset `x` (outside raw arrays): that
  // of the last array starting before it, 0 before the first.
  uint64_t ShiftAt(uint64_t x) const {
    auto after = std::upper_bound(
        arrays_.begin(), arrays_.end(), x,
        [](uint64_t v, const Array& a) { return v < a.start; });
    return after == arrays_.begin() ? 0 : std::prev(after)->shift;
  }

 private:
  absl::Status AppendPieces(absl::string_view data) {
    if (!data.empty()) last_byte_ = static_cast<uint8_t>(data.back());
    while (!data.empty()) {
      const uint64_t x = received_;
      size_t n = data.size();
      absl::Status status;
      if (x < frontier_) {
        // The data of the last array (see the invariants).
        const Array& a = arrays_.back();
        n = static_cast<size_t>(std::min<uint64_t>(n, frontier_ - x));
        status = writer_->WriteAt(x + a.shift, data.substr(0, n));
      } else if (!stopped_) {
        status = stream_.WriteAt(x, data);
      }  // else: after the STOP, not part of the value
      if (!status.ok()) return status;
      received_ += n;
      data.remove_prefix(n);
    }
    return absl::OkStatus();
  }

  // Writes what the probe classified beyond frontier_.
  absl::Status Apply() {
    const std::vector<LayoutProbe::Array>& found = probe_->arrays();
    uint64_t shift = arrays_.empty() ? 0 : arrays_.back().shift;
    for (size_t i = arrays_.size(); i < found.size(); ++i) {
      const LayoutProbe::Array& a = found[i];
      // Pickle bytes before the array keep the current shift.
      absl::Status status = WriteFromStream(frontier_, a.start, shift);
      if (!status.ok()) return status;
      shift = AlignUp(a.start + shift) - a.start;
      const uint64_t end = a.start + a.length;
      status = WriteFromStream(a.start, end, shift);
      if (!status.ok()) return status;
      stream_.Release(a.start, std::min(end, received_));
      arrays_.push_back({a.start, a.length, shift});
      array_bytes_ += a.length;
      frontier_ = end;
    }
    if (probe_->frontier() > frontier_) {
      absl::Status status =
          WriteFromStream(frontier_, probe_->frontier(), shift);
      if (!status.ok()) return status;
      frontier_ = probe_->frontier();
    }
    stopped_ = probe_->stopped();
    return absl::OkStatus();
  }

  // Writes the received bytes of [begin, end) from stream_ at + shift.
  absl::Status WriteFromStream(uint64_t begin, uint64_t end, uint64_t shift) {
    end = std::min(end, received_);
    if (begin >= end) return absl::OkStatus();
    return writer_->WriteAt(begin + shift, stream_.view(begin, end - begin));
  }

  SegmentWriter* const writer_;
  const PickleLimits limits_;
  std::unique_ptr<LayoutProbe> probe_;  // null in raw mode
  GrowableBuffer stream_;  // the decoded stream, sparse: consumed pages are released
  std::vector<Array> arrays_;
  uint64_t array_bytes_ = 0;
  uint64_t received_ = 0;
  uint64_t frontier_ = 0;
  uint8_t last_byte_ = 0;
  bool stopped_ = false;
  absl::Status error_;
  bool content_error_ = false;
};

// What the first bytes of a source say.
struct SourceHead {
  v1::Format format = v1::FORMAT_JOBLIB;
  v1::Codec codec = v1::CODEC_NONE;
  uint64_t stream_start = 0;  // where the (compressed) stream starts
};

absl::StatusOr<SourceHead> ReadHead(const SegmentSource& source) {
  const std::string& name = source.display_name;
  char head[kHeadSize];
  size_t n = static_cast<size_t>(std::min<uint64_t>(source.size, kHeadSize));
  absl::Status status = PreadExactly(source.fd, 0, n, head, name, source.size);
  if (!status.ok()) return status;
  absl::string_view prefix(head, n);
  SourceHead result;
  if (prefix.size() >= 2 && prefix.substr(0, 2) == "ZF") {
    // joblib < 0.10: one zlib stream after the header (Decode reports
    // garbage there).
    if (source.size <= 2 + kZFileMaxLen) {
      return absl::DataLossError(
          absl::StrCat(name, ": joblib 'ZF' file is truncated in its header"));
    }
    size_t pos = 2 + kZFileMaxLen;
    if (prefix[pos] == ' ') ++pos;  // py2 joblib <= 0.8.4 wrote one more space
    result.format = v1::FORMAT_ZFILE;
    result.codec = v1::CODEC_ZLIB;
    result.stream_start = pos;
  } else {
    result.codec = static_cast<v1::Codec>(DetectCodec(prefix));
  }
  if (source.raw) result.format = v1::FORMAT_RAW;
  return result;
}

// Whether DecodeAll continues into a stream of `codec` that follows.
bool DecodeAllFollows(Codec codec) {
  return codec == Codec::kBz2 || codec == Codec::kLzma || codec == Codec::kXz ||
         codec == Codec::kLz4;
}

void AddArray(const LoadArrayLocation& loc, v1::Codec codec,
              v1::LoadReply* index) {
  v1::LoadArray* array = index->add_arrays();
  switch (loc.kind) {
    case LoadArrayLocation::Kind::kRaw:
      array->set_kind(v1::LoadArray::RAW);
      break;
    case LoadArrayLocation::Kind::kObjectStream:
      array->set_kind(v1::LoadArray::OBJECT_STREAM);
      break;
    case LoadArrayLocation::Kind::kLegacy:
      array->set_kind(v1::LoadArray::LEGACY);
      break;
  }
  array->set_padded(loc.padded);
  if (codec == v1::CODEC_NONE) array->set_source_offset(loc.offset);
  // What the wrapper state says, for clients that do not unpickle.
  array->set_dtype(loc.dtype);
  array->set_itemsize(loc.itemsize);
  for (uint64_t dim : loc.shape) array->add_shape(dim);
  array->set_fortran_order(loc.fortran_order);
}

// The straightforward build, kept for streams the probe and the indexer
// disagree on (which should not happen): the whole source and the whole
// decoded stream in memory, then the pieces written.
absl::StatusOr<v1::LoadReply> BuildInMemory(const SegmentSource& source,
                                            const SourceHead& head,
                                            const PickleLimits& limits,
                                            SegmentWriter* writer,
                                            uint64_t* segment_size) {
  const std::string& name = source.display_name;
  GrowableBuffer file;
  absl::Status status = ReadFileInto(source.fd, source.size, name, &file);
  if (!status.ok()) return status;
  v1::LoadReply index;
  index.set_format(head.format);
  index.set_codec(head.codec);
  absl::string_view compressed = file.view();
  compressed.remove_prefix(head.stream_start);
  GrowableBuffer decoded;
  absl::string_view stream = compressed;
  // (input bytes, decoded bytes) at the end of each stream, for DecodeAll's
  // concatenated streams: the trailing bytes start after the stream that
  // holds the STOP, as in the streamed build.
  std::vector<std::pair<uint64_t, uint64_t>> ends;
  if (head.codec != v1::CODEC_NONE) {
    const Codec codec = static_cast<Codec>(head.codec);
    uint64_t used = 0;
    do {
      size_t n = 0;
      status = Decode(codec, compressed.substr(used), &decoded, &n);
      if (!status.ok()) return Annotate(name, status);
      used += n;
      ends.emplace_back(used, decoded.size());
    } while (used < compressed.size() && DecodeAllFollows(codec) &&
             DetectCodec(compressed.substr(used)) == codec);
    stream = decoded.view();
  }
  absl::StatusOr<IndexedStream> indexed = IndexJoblibStream(stream, limits);
  if (!indexed.ok()) return Annotate(name, indexed.status());
  if (head.codec == v1::CODEC_NONE) {
    index.set_trailing_bytes(stream.size() - indexed->end_offset);
  } else {
    uint64_t consumed = ends.back().first;
    for (const auto& [in, out] : ends) {
      if (out >= indexed->end_offset) {
        consumed = in;
        break;
      }
    }
    index.set_trailing_bytes(compressed.size() - consumed);
  }
  index.mutable_skeleton()->set_offset(0);
  index.mutable_skeleton()->set_length(indexed->skeleton.size());
  status = writer->WriteAt(0, indexed->skeleton);
  if (!status.ok()) return status;
  uint64_t offset = indexed->skeleton.size();
  for (const LoadArrayLocation& loc : indexed->arrays) {
    AddArray(loc, head.codec, &index);
    if (loc.kind == LoadArrayLocation::Kind::kLegacy) continue;
    offset = AlignUp(offset);
    v1::LoadArray* array = index.mutable_arrays(index.arrays_size() - 1);
    array->mutable_data()->set_offset(offset);
    array->mutable_data()->set_length(loc.length);
    status = writer->WriteAt(offset, stream.substr(loc.offset, loc.length));
    if (!status.ok()) return status;
    offset += loc.length;
  }
  status = writer->Finish(offset);
  if (!status.ok()) return status;
  index.set_segment_size(offset);
  *segment_size = offset;
  return index;
}

}  // namespace

void SetDefaultBuildLimits(const PickleLimits& limits) {
  default_build_limits = limits;
}

const PickleLimits& DefaultBuildLimits() { return default_build_limits; }

absl::StatusOr<v1::LoadReply> BuildSegment(const SegmentSource& source,
                                           const std::string& segment_path,
                                           uint64_t* segment_size) {
  ScopedFd fd(::open(segment_path.c_str(),
                     O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0400));
  if (!fd.valid()) return ErrnoStatus("create segment", segment_path, errno);
  absl::StatusOr<v1::LoadReply> built =
      BuildSegmentInto(source, fd.get(), segment_path, segment_size);
  // A failed build leaves no partial segment behind.
  if (!built.ok()) ::unlink(segment_path.c_str());
  return built;
}

absl::StatusOr<v1::LoadReply> BuildSegmentInto(const SegmentSource& source,
                                               int segment_fd,
                                               const std::string& segment_path,
                                               uint64_t* segment_size) {
  const auto started = std::chrono::steady_clock::now();
  const std::string& name = source.display_name;
  if (source.size == 0) {
    return absl::OutOfRangeError(absl::StrCat(
        name, " is empty: it is not a joblib file (was the dump interrupted?)"));
  }
  absl::StatusOr<SourceHead> head = ReadHead(source);
  if (!head.ok()) return head.status();

  SegmentWriter writer(segment_fd, segment_path);
  // A sequential reader: larger readahead while we decode.
  ::posix_fadvise(source.fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  const Codec codec = static_cast<Codec>(head->codec);
  FileSource input(source.fd, head->stream_start, source.size, name,
                   codec != Codec::kNone &&
                       MostlyUncached(source.fd, 0, source.size));
  const PickleLimits limits =
      source.limits != nullptr ? *source.limits : DefaultBuildLimits();
  LayoutSink sink(&writer, source.raw, limits);
  // Uncompressed: stop reading at the pickle's STOP. Compressed: decode the
  // streams joblib's readers would (DecodeAll), but no stream after the one
  // holding the STOP, so values written one after another into one file
  // object load one at a time.
  class StoppingSource : public ByteSource {
   public:
    StoppingSource(FileSource* in, const LayoutSink* sink) : in_(in), sink_(sink) {}
    absl::StatusOr<absl::string_view> Read() override {
      if (sink_->stopped()) in_->StopEarly();
      return in_->Read();
    }

   private:
    FileSource* in_;
    const LayoutSink* sink_;
  } stopping(&input, &sink);
  const bool raw = source.raw;
  auto another = [&sink, raw] {
    if (raw) return true;
    return sink.Classify().ok() && !sink.stopped();
  };
  ByteSource* in = (codec == Codec::kNone && !raw) ? static_cast<ByteSource*>(&stopping)
                                                   : &input;
  uint64_t consumed = 0;
  absl::Status status = DecodeAllFrom(codec, in, &sink, &consumed, another);
  if (status.ok()) status = sink.Classify();
  if (!status.ok()) {
    // Read errors name the source, segment errors the segment; the rest
    // (the codec's and the probe's) is about the source's content.
    if (!input.error().ok()) return input.error();
    if (!sink.error().ok() && !sink.content_error()) return sink.error();
    return Annotate(name, status);
  }
  sink.DropProbe();

  v1::LoadReply index;
  index.set_format(head->format);
  index.set_codec(head->codec);
  index.set_segment_path(segment_path);
  const uint64_t stream_bytes = source.size - head->stream_start;
  if (codec != Codec::kNone) index.set_trailing_bytes(stream_bytes - consumed);
  uint64_t size = 0;
  if (raw) {
    index.mutable_skeleton()->set_offset(0);
    index.mutable_skeleton()->set_length(sink.received());
    size = sink.received();
  } else {
    absl::StatusOr<absl::string_view> stream = sink.SparseStream();
    if (!stream.ok()) return stream.status();
    absl::StatusOr<IndexedStream> indexed = IndexJoblibStream(*stream, limits);
    if (!indexed.ok()) return Annotate(name, indexed.status());
    if (codec == Codec::kNone) {
      index.set_trailing_bytes(stream_bytes - indexed->end_offset);
    }
    // The indexer is the authority: every raw array it found must be where
    // the probe put it, everything else classified and written.
    bool agree = sink.stopped() && sink.frontier() == indexed->end_offset;
    size_t next_raw = 0;
    for (const LoadArrayLocation& loc : indexed->arrays) {
      if (!agree) break;
      AddArray(loc, head->codec, &index);
      if (loc.kind == LoadArrayLocation::Kind::kLegacy) continue;
      uint64_t dest = 0;
      if (loc.kind == LoadArrayLocation::Kind::kRaw) {
        const std::vector<LayoutSink::Array>& arrays = sink.arrays();
        if (next_raw >= arrays.size() || arrays[next_raw].start != loc.offset ||
            arrays[next_raw].length != loc.length) {
          agree = false;
          break;
        }
        dest = loc.offset + arrays[next_raw++].shift;
      } else {
        dest = loc.offset + sink.ShiftAt(loc.offset);
      }
      v1::LoadArray* array = index.mutable_arrays(index.arrays_size() - 1);
      array->mutable_data()->set_offset(dest);
      array->mutable_data()->set_length(loc.length);
    }
    if (!agree || next_raw != sink.arrays().size()) {
      // Building in memory holds the file and the whole decoded stream:
      // only within the pickle budget.
      if (source.size + sink.received() > limits.max_pickle_bytes) {
        return absl::InternalError(absl::StrCat(
            name, ": the streamed layout disagrees with the index, and the "
            "file is too large to build in memory (a bug: please report it "
            "with the file)"));
      }
      fprintf(stderr,
              "persistd: %s: the streamed layout disagrees with the index; "
              "building the segment in memory\n",
              name.c_str());
      status = writer.Reset();
      if (!status.ok()) return status;
      absl::StatusOr<v1::LoadReply> built =
          BuildInMemory(source, *head, limits, &writer, segment_size);
      if (built.ok()) built->set_segment_path(segment_path);
      return built;
    }
    // The rewritten pickle goes after the data.
    const uint64_t skeleton_offset = AlignUp(writer.end());
    status = writer.WriteAt(skeleton_offset, indexed->skeleton);
    if (!status.ok()) return status;
    index.mutable_skeleton()->set_offset(skeleton_offset);
    index.mutable_skeleton()->set_length(indexed->skeleton.size());
    size = skeleton_offset + indexed->skeleton.size();
  }
  status = writer.Finish(size);
  if (!status.ok()) return status;
  index.set_segment_size(size);
  *segment_size = size;

  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - started)
                             .count();
  fprintf(stderr,
          "persistd: built %s: %.1f MiB (%s) from %.1f MiB of %s in %.3f s\n",
          segment_path.c_str(), size / 1048576.0,
          raw ? "raw" : absl::StrCat(index.arrays_size(), " arrays").c_str(),
          source.size / 1048576.0, std::string(CodecName(codec)).c_str(),
          seconds);
  return index;
}

}  // namespace persistd
