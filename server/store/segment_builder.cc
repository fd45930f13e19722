#include "server/store/segment_builder.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/codec/codec.h"
#include "server/format/joblib_reader.h"
#include "server/io/errno_status.h"
#include "server/io/growable_buffer.h"
#include "server/io/scoped_fd.h"

namespace persistd {

namespace {

uint64_t AlignUp(uint64_t n) {
  return (n + kSegmentAlignment - 1) / kSegmentAlignment * kSegmentAlignment;
}

// joblib < 0.10 wrote 'ZF' + the hex length of the payload, padded with
// spaces to 19 bytes (one more for py2 joblib <= 0.8.4), then one zlib
// stream. Returns the offset of the zlib stream (Decode reports garbage).
absl::StatusOr<size_t> ZFileHeaderLength(absl::string_view file,
                                         const std::string& name) {
  constexpr size_t kMaxLen = 19;  // len(hex(2**64))
  if (file.size() <= 2 + kMaxLen) {
    return absl::DataLossError(
        absl::StrCat(name, ": joblib 'ZF' file is truncated in its header"));
  }
  size_t pos = 2 + kMaxLen;
  if (file[pos] == ' ') ++pos;  // py2 joblib <= 0.8.4 wrote one more space
  return pos;
}

// Writes `pieces` at their offsets with pwrite.
class SegmentWriter {
 public:
  SegmentWriter(int fd, const std::string& path) : fd_(fd), path_(path) {}

  absl::Status WriteAt(uint64_t offset, absl::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::pwrite(fd_, data.data(), std::min<size_t>(data.size(), 1 << 28),
                           static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("write segment", path_, errno);
      }
      data.remove_prefix(static_cast<size_t>(n));
      offset += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }

 private:
  int fd_;
  const std::string& path_;
};

}  // namespace

absl::StatusOr<v1::LoadReply> BuildSegment(const SegmentSource& source,
                                           const std::string& segment_path,
                                           uint64_t* segment_size) {
  const std::string& name = source.display_name;
  if (source.size == 0) {
    return absl::OutOfRangeError(absl::StrCat(
        name, " is empty: it is not a joblib file (was the dump interrupted?)"));
  }
  GrowableBuffer file;
  absl::Status status = ReadFileInto(source.fd, source.size, name, &file);
  if (!status.ok()) return status;

  v1::LoadReply index;
  index.set_format(v1::FORMAT_JOBLIB);
  absl::string_view compressed = file.view();
  if (compressed.size() >= 2 && compressed.substr(0, 2) == "ZF") {
    absl::StatusOr<size_t> header = ZFileHeaderLength(compressed, name);
    if (!header.ok()) return header.status();
    compressed.remove_prefix(*header);
    index.set_format(v1::FORMAT_ZFILE);
    index.set_codec(v1::CODEC_ZLIB);
  } else {
    index.set_codec(static_cast<v1::Codec>(DetectCodec(compressed)));
  }

  GrowableBuffer decoded;
  absl::string_view stream = compressed;
  if (index.codec() != v1::CODEC_NONE) {
    size_t consumed = 0;
    Codec codec = static_cast<Codec>(index.codec());
    status = Decode(codec, compressed, &decoded, &consumed);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat(name, ": ", status.message()));
    }
    index.set_trailing_bytes(compressed.size() - consumed);
    stream = decoded.view();
  }
  if (source.raw) index.set_format(v1::FORMAT_RAW);

  // Lay out: the (rewritten) pickle first, then each array aligned.
  std::string skeleton;
  std::vector<std::pair<uint64_t, absl::string_view>> pieces;
  uint64_t offset = 0;
  if (source.raw) {
    index.mutable_skeleton()->set_offset(0);
    index.mutable_skeleton()->set_length(stream.size());
    pieces.emplace_back(0, stream);
    offset = stream.size();
  } else {
    absl::StatusOr<IndexedStream> indexed = IndexJoblibStream(stream);
    if (!indexed.ok()) {
      return absl::Status(indexed.status().code(),
                          absl::StrCat(name, ": ", indexed.status().message()));
    }
    if (index.codec() == v1::CODEC_NONE) {
      index.set_trailing_bytes(stream.size() - indexed->end_offset);
    }
    skeleton = std::move(indexed->skeleton);
    index.mutable_skeleton()->set_offset(0);
    index.mutable_skeleton()->set_length(skeleton.size());
    pieces.emplace_back(0, skeleton);
    offset = skeleton.size();
    for (const LoadArrayLocation& loc : indexed->arrays) {
      v1::LoadArray* array = index.add_arrays();
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
      if (index.codec() == v1::CODEC_NONE) array->set_source_offset(loc.offset);
      if (loc.kind == LoadArrayLocation::Kind::kLegacy) continue;
      offset = AlignUp(offset);
      array->mutable_data()->set_offset(offset);
      array->mutable_data()->set_length(loc.length);
      pieces.emplace_back(offset, stream.substr(loc.offset, loc.length));
      offset += loc.length;
    }
  }
  index.set_segment_path(segment_path);
  index.set_segment_size(offset);

  ScopedFd fd(::open(segment_path.c_str(),
                     O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0400));
  if (!fd.valid()) return ErrnoStatus("create segment", segment_path, errno);
  if (offset > 0) {
    // Preallocate: a full disk fails here, before any client maps a page.
    int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(offset));
    if (rc != 0) {
      return ErrnoStatus(absl::StrCat("preallocate ", offset, " bytes for segment"),
                         segment_path, rc);
    }
  }
  SegmentWriter writer(fd.get(), segment_path);
  for (const auto& [at, data] : pieces) {
    status = writer.WriteAt(at, data);
    if (!status.ok()) return status;
  }
  *segment_size = offset;
  return index;
}

}  // namespace persistd
