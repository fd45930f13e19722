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
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/io/atomic_file.h"
#include "common/io/errno_status.h"
#include "common/io/scoped_fd.h"
#include "common/log/log.h"
#include "server/codec/codec.h"
#include "server/codec/codec_proto.h"
#include "server/format/joblib_indexer.h"
#include "server/format/pickle_limits.h"
#include "server/io/pread_exactly.h"

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
// With a `ready` function (a source its client is still filling), each
// piece is read once `ready` says it is final.
//
// With drop_behind, the pages read are dropped from the page cache once
// the decoder is done with them: a compressed source that was not cached is
// read once per version (the segment is the cached form), and caching it
// would double the memory a load costs; its freed pages are the first that
// the segment's writes reuse. With punch_behind (a staging file nobody
// reads again) they are freed for good: holes are punched in it.
class FileSource : public ByteSource {
 public:
  FileSource(int fd, uint64_t start, uint64_t end, const std::string& name,
             bool drop_behind, bool punch_behind, const PayloadReady& ready)
      : fd_(fd), pos_(start), end_(end), name_(name),
        buffer_(new char[kReadSize]), drop_behind_(drop_behind),
        punch_behind_(punch_behind), ready_(ready), dropped_(start) {}
  ~FileSource() override { DropBehind(); }

  // Makes Read report the end of the input from now on (used for
  // uncompressed sources once the pickle's STOP has been seen).
  void StopEarly() { end_ = std::min(end_, pos_); }

  absl::StatusOr<absl::string_view> Read() override {
    DropBehind();  // the last piece is consumed
    if (pos_ >= end_) return absl::string_view();
    size_t n = static_cast<size_t>(std::min<uint64_t>(kReadSize, end_ - pos_));
    absl::Status status = ready_ ? ready_(pos_ + n) : absl::OkStatus();
    if (status.ok()) status = PreadExactly(fd_, pos_, n, buffer_.get(), name_, end_);
    if (!status.ok()) return error_ = status;
    pos_ += n;
    return absl::string_view(buffer_.get(), n);
  }

  // The error Read returned, if any.
  const absl::Status& error() const { return error_; }
  // Where the next piece starts: every byte below it was read.
  uint64_t position() const { return pos_; }

 private:
  void DropBehind() {
    if (punch_behind_) {
      // Whole pages only: the first one holds the staging header.
      const uint64_t from = AlignUp(dropped_, 4096);
      const uint64_t to = pos_ / 4096 * 4096;
      if (to > from) {
        ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(from), static_cast<off_t>(to - from));
        dropped_ = to;
      }
      return;
    }
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
  const bool punch_behind_;
  const PayloadReady& ready_;
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


// Lays the decoded stream out in the segment as the indexer passes it on,
// so the decompressed bytes are written once, straight from the decoder's
// buffer (or the indexer's slice), and never held in memory whole:
//  - each raw array's data at stream offset + shift, the shift (growing by
//    less than 64 bytes per array) making the segment offset 64-byte
//    aligned;
//  - everything else (pickle opcodes, padding, object-array pickles) at
//    stream offset + the shift of the raw array before it.
//
// Invariants: shift_ is the shift of the last raw array announced (0
// before the first); data_offsets_[i] is where the i-th array's data starts
// in the segment (0 for legacy arrays, which have none).
class SegmentLayout : public JoblibIndexer::Listener {
 public:
  explicit SegmentLayout(SegmentWriter* writer) : writer_(writer) {}

  absl::Status OnBytes(uint64_t offset, absl::string_view bytes) override {
    absl::Status status = writer_->WriteAt(offset + shift_, bytes);
    if (!status.ok()) write_error_ = status;
    return status;
  }

  absl::Status OnArray(const LoadArrayLocation& array) override {
    uint64_t data = 0;
    if (array.kind == LoadArrayLocation::Kind::kRaw) {
      shift_ = AlignUp(array.offset + shift_) - array.offset;
    }
    if (array.kind != LoadArrayLocation::Kind::kLegacy) {
      data = array.offset + shift_;
    }
    data_offsets_.push_back(data);
    return absl::OkStatus();
  }

  // The segment's error, if a write failed (the rest are the stream's).
  const absl::Status& write_error() const { return write_error_; }
  const std::vector<uint64_t>& data_offsets() const { return data_offsets_; }

 private:
  SegmentWriter* const writer_;
  uint64_t shift_ = 0;
  std::vector<uint64_t> data_offsets_;
  absl::Status write_error_;
};

// Feeds the decoder's output to the indexer.
class IndexingSink : public ByteSink {
 public:
  explicit IndexingSink(JoblibIndexer* indexer) : indexer_(indexer) {}
  absl::Status Append(absl::string_view data) override {
    return indexer_->Feed(data);
  }
  absl::Status Finish() override { return absl::OkStatus(); }

 private:
  JoblibIndexer* const indexer_;
};

// LoadRequest.raw: the decoded bytes as they are, at their offsets.
class RawSink : public ByteSink {
 public:
  explicit RawSink(SegmentWriter* writer) : writer_(writer) {}
  absl::Status Append(absl::string_view data) override {
    absl::Status status = writer_->WriteAt(received_, data);
    if (!status.ok()) write_error_ = status;
    received_ += data.size();
    return status;
  }
  absl::Status Finish() override { return absl::OkStatus(); }
  uint64_t received() const { return received_; }
  const absl::Status& write_error() const { return write_error_; }

 private:
  SegmentWriter* const writer_;
  uint64_t received_ = 0;
  absl::Status write_error_;
};

// Passes the decoded bytes on, asking the source's `ready` first (with
// what was read already, so it only checks that the build may go on): a
// piece of a compressed source may decode for long -- 2 MiB of xz can hold
// gigabytes of zeros -- and `ready` is also how a build learns that its
// requests were abandoned (SegmentCache::Wanted).
class AskingSink : public ByteSink {
 public:
  AskingSink(ByteSink* out, const FileSource* input, const PayloadReady& ready)
      : out_(out), input_(input), ready_(ready) {}
  absl::Status Append(absl::string_view data) override {
    if (ready_) {
      absl::Status status = ready_(input_->position());
      if (!status.ok()) return error_ = status;
    }
    return out_->Append(data);
  }
  absl::Status Skip(uint64_t size) override { return out_->Skip(size); }
  absl::Status Finish() override { return out_->Finish(); }
  // The error `ready` returned, if any.
  const absl::Status& error() const { return error_; }

 private:
  ByteSink* const out_;
  const FileSource* const input_;
  const PayloadReady& ready_;
  absl::Status error_;
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
  absl::Status status =
      source.ready ? source.ready(source.offset + n) : absl::OkStatus();
  if (status.ok()) {
    status = PreadExactly(source.fd, source.offset, n, head, name,
                          source.offset + source.size);
  }
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
    result.codec = ToProto(DetectCodec(prefix));
  }
  if (source.raw) result.format = v1::FORMAT_RAW;
  return result;
}

// The one conversion of the format layer's array into the reply's:
// everything but where the data lies in the segment, which the layout
// knows. Returns the added array.
v1::LoadArray* AddArray(const LoadArrayLocation& loc, v1::Codec codec,
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
  array->set_path(loc.path);
  return array;
}

}  // namespace

void SetDefaultBuildLimits(const PickleLimits& limits) {
  default_build_limits = limits;
}

const PickleLimits& DefaultBuildLimits() { return default_build_limits; }

absl::Status EmptySourceError(const std::string& name) {
  return absl::OutOfRangeError(absl::StrCat(
      name, " is empty: it is not a joblib file (was the dump interrupted?)"));
}

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
  if (source.size == 0) return EmptySourceError(name);
  absl::StatusOr<SourceHead> head = ReadHead(source);
  if (!head.ok()) return head.status();

  SegmentWriter writer(segment_fd, segment_path);
  // A sequential reader: larger readahead while we decode.
  ::posix_fadvise(source.fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  const Codec codec = FromProto(head->codec);
  const uint64_t end = source.offset + source.size;
  FileSource input(source.fd, source.offset + head->stream_start, end, name,
                   codec != Codec::kNone && !source.release_behind &&
                       MostlyUncached(source.fd, source.offset, end),
                   source.release_behind, source.ready);
  const PickleLimits limits =
      source.limits != nullptr ? *source.limits : DefaultBuildLimits();
  const bool raw = source.raw;
  SegmentLayout layout(&writer);
  JoblibIndexer indexer(limits, &layout);
  IndexingSink indexing(&indexer);
  RawSink raw_sink(&writer);
  AskingSink sink(raw ? static_cast<ByteSink*>(&raw_sink) : &indexing, &input,
                  source.ready);
  // Uncompressed: stop reading at the pickle's STOP. Compressed: decode the
  // streams joblib's readers would (DecodeAll), but no stream after the one
  // holding the STOP, so values written one after another into one file
  // object load one at a time.
  class StoppingSource : public ByteSource {
   public:
    StoppingSource(FileSource* in, const JoblibIndexer* indexer)
        : in_(in), indexer_(indexer) {}
    absl::StatusOr<absl::string_view> Read() override {
      if (indexer_->stopped()) in_->StopEarly();
      return in_->Read();
    }

   private:
    FileSource* in_;
    const JoblibIndexer* indexer_;
  } stopping(&input, &indexer);
  auto another = [&indexer, raw] {
    if (raw) return true;
    return indexer.Settle().ok() && !indexer.stopped();
  };
  ByteSource* in = (codec == Codec::kNone && !raw)
                       ? static_cast<ByteSource*>(&stopping)
                       : &input;
  uint64_t consumed = 0;
  absl::Status status = DecodeAllFrom(codec, in, &sink, &consumed, another);
  absl::StatusOr<IndexedStream> indexed;
  if (status.ok() && !raw) {
    indexed = indexer.Finish();
    status = indexed.status();
  }
  if (!status.ok()) {
    // Read errors name the source, segment errors the segment; the rest
    // (the codec's and the indexer's) is about the source's content.
    if (!input.error().ok()) return input.error();
    if (!sink.error().ok()) return sink.error();
    if (!layout.write_error().ok()) return layout.write_error();
    if (!raw_sink.write_error().ok()) return raw_sink.write_error();
    return Annotate(name, status);
  }

  v1::LoadReply index;
  index.set_format(head->format);
  index.set_codec(head->codec);
  index.set_segment_path(segment_path);
  const uint64_t stream_bytes = source.size - head->stream_start;
  if (codec != Codec::kNone) index.set_trailing_bytes(stream_bytes - consumed);
  uint64_t size = 0;
  if (raw) {
    index.mutable_skeleton()->set_offset(0);
    index.mutable_skeleton()->set_length(raw_sink.received());
    size = raw_sink.received();
  } else {
    if (codec == Codec::kNone) {
      index.set_trailing_bytes(stream_bytes - indexed->end_offset);
    }
    const std::vector<uint64_t>& data_offsets = layout.data_offsets();
    if (data_offsets.size() != indexed->arrays.size()) {
      return absl::InternalError(absl::StrCat(
          name, ": the indexer announced ", data_offsets.size(),
          " arrays and listed ", indexed->arrays.size()));
    }
    for (size_t i = 0; i < indexed->arrays.size(); ++i) {
      const LoadArrayLocation& loc = indexed->arrays[i];
      v1::LoadArray* array = AddArray(loc, head->codec, &index);
      if (loc.kind == LoadArrayLocation::Kind::kLegacy) continue;
      array->mutable_data()->set_offset(data_offsets[i]);
      array->mutable_data()->set_length(loc.length);
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
  log::Info("built the segment of %s: %s, %.1f MiB (%s) from %.1f MiB of %s in %.3f s",
            source.display_name, segment_path, size / 1048576.0,
            raw ? "raw" : absl::StrCat(index.arrays_size(), " arrays"),
            source.size / 1048576.0, CodecName(codec), seconds);
  return index;
}

}  // namespace persistd
