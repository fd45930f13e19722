#include "server/store/dump_writer.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/codec/codec.h"
#include "server/codec/codec_proto.h"
#include "server/format/joblib_writer.h"
#include "server/io/byte_sink.h"

namespace persistd {

namespace {

absl::StatusOr<absl::string_view> Slice(absl::string_view payload,
                                        const v1::Extent& extent,
                                        absl::string_view what) {
  if (extent.offset() > payload.size() ||
      extent.length() > payload.size() - extent.offset()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " extent [", extent.offset(), ", +", extent.length(),
        ") lies outside the payload of ", payload.size(), " bytes"));
  }
  return payload.substr(extent.offset(), extent.length());
}

// Forwards to `next` in slices of kSlice bytes, each once `ready` says the
// payload bytes it holds are final. It sits in front of the encoder, which
// would otherwise take a whole array in one call: a dump whose client went
// away stops within one slice's compression time (xz -6 at a few MB/s:
// well under 100 ms), and a streamed payload is compressed as it arrives.
class PacedSink : public ByteSink {
 public:
  static constexpr size_t kSlice = 256 << 10;

  PacedSink(ByteSink* next, absl::string_view payload, const PayloadReady& ready,
            const DumpProgress& progress)
      : next_(next), payload_(payload), ready_(ready), progress_(progress) {}
  absl::Status Append(absl::string_view data) override {
    do {
      absl::string_view slice = data.substr(0, kSlice);
      const uint64_t end = PayloadEnd(slice);
      absl::Status status = ready_(end);
      if (status.ok()) status = next_->Append(slice);
      if (!status.ok()) return status;
      if (progress_ && end > consumed_) {
        consumed_ = end;
        progress_(end);
      }
      data.remove_prefix(slice.size());
    } while (!data.empty());
    return absl::OkStatus();
  }
  absl::Status Finish() override {
    absl::Status status = ready_(0);
    return status.ok() ? next_->Finish() : status;
  }
  absl::Status Skip(uint64_t size) override {
    absl::Status status = ready_(0);
    return status.ok() ? next_->Skip(size) : status;
  }

 private:
  // The payload offset just past `slice`, or 0 when it is not payload
  // bytes (opcodes and padding the writer made itself).
  uint64_t PayloadEnd(absl::string_view slice) const {
    const char* begin = payload_.data();
    if (slice.data() < begin || slice.data() >= begin + payload_.size()) return 0;
    return static_cast<uint64_t>(slice.data() - begin) + slice.size();
  }

  ByteSink* const next_;
  const absl::string_view payload_;
  const PayloadReady& ready_;
  const DumpProgress& progress_;
  uint64_t consumed_ = 0;  // the most progress_ was told
};

}  // namespace

DumpProgress ProgressToPayloadHeader(int payload_fd) {
  return [payload_fd](uint64_t consumed) {
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(consumed >> (8 * i));
    // Best effort: progress must never fail a dump.
    ssize_t ignored = ::pwrite(payload_fd, bytes, sizeof(bytes), 8);
    (void)ignored;
  };
}

absl::StatusOr<v1::DumpReply> WriteDump(const v1::DumpRequest& request,
                                        absl::string_view payload, int fd,
                                        const std::string& name, int threads,
                                        const PayloadReady& ready,
                                        const DumpProgress& progress) {
  // Everything but raw array data is final before the call; the writer
  // validates it all before its first byte.
  uint64_t prefix = request.skeleton().offset() + request.skeleton().length();
  for (const v1::DumpArray& a : request.arrays()) {
    prefix = std::max(prefix, a.state().offset() + a.state().length());
    if (a.kind() == v1::DumpArray::OBJECT_STREAM) {
      prefix = std::max(prefix, a.data().offset() + a.data().length());
    }
  }
  absl::Status prefix_ready = ready(std::min<uint64_t>(prefix, payload.size()));
  if (!prefix_ready.ok()) return prefix_ready;
  absl::StatusOr<absl::string_view> skeleton =
      Slice(payload, request.skeleton(), "skeleton");
  if (!skeleton.ok()) return skeleton.status();
  const Codec codec = FromProto(request.codec());
  std::vector<DumpArraySpec> arrays;
  arrays.reserve(request.arrays_size());
  for (int i = 0; i < request.arrays_size(); ++i) {
    const v1::DumpArray& a = request.arrays(i);
    DumpArraySpec spec;
    absl::StatusOr<absl::string_view> state =
        Slice(payload, a.state(), absl::StrCat("array ", i, " state"));
    if (!state.ok()) return state.status();
    spec.state_pickle = *state;
    switch (a.kind()) {
      case v1::DumpArray::EXTERNAL:
        if (codec != Codec::kNone) {
          return absl::InvalidArgumentError(absl::StrCat(
              "array ", i, " is EXTERNAL, but only an uncompressed dump can "
              "leave the client a hole to fill"));
        }
        spec.kind = DumpArraySpec::Kind::kExternal;
        spec.external_size = a.data().length();
        break;
      case v1::DumpArray::OBJECT_STREAM:
      case v1::DumpArray::RAW: {
        spec.kind = a.kind() == v1::DumpArray::RAW
                        ? DumpArraySpec::Kind::kRaw
                        : DumpArraySpec::Kind::kObjectStream;
        absl::StatusOr<absl::string_view> data =
            Slice(payload, a.data(), absl::StrCat("array ", i, " data"));
        if (!data.ok()) return data.status();
        spec.data = *data;
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("array ", i, " has unknown kind ", a.kind()));
    }
    arrays.push_back(spec);
  }

  FdSink file_sink(fd, name);
  std::unique_ptr<ByteSink> encoder;
  ByteSink* stream_sink = &file_sink;
  if (codec != Codec::kNone) {
    // An encoder that waits on its workers (xz) asks whether the client
    // is still there while it waits: ready(0) reports only that.
    absl::StatusOr<std::unique_ptr<ByteSink>> made =
        NewEncoder(codec, request.level(), threads, &file_sink,
                   [&ready] { return !ready(0).ok(); });
    if (!made.ok()) return made.status();
    encoder = *std::move(made);
    stream_sink = encoder.get();
  }
  PacedSink paced(stream_sink, payload, ready, progress);
  ByteSink* sink = &paced;
  std::vector<uint64_t> holes;
  absl::StatusOr<uint64_t> stream_bytes =
      WriteJoblibStream(*skeleton, arrays, sink, &holes);
  if (!stream_bytes.ok()) return stream_bytes.status();
  // An encoder's Finish writes its trailer and finishes the file sink.
  absl::Status status = sink->Finish();
  if (!status.ok()) return status;
  if (progress) progress(payload.size());

  v1::DumpReply reply;
  for (size_t k = 0; k < arrays.size(); ++k) {
    if (arrays[k].kind == DumpArraySpec::Kind::kExternal) {
      reply.add_external_offsets(holes[k]);
    }
  }
  reply.set_file_bytes(file_sink.bytes_written());
  reply.set_stream_bytes(*stream_bytes);
  return reply;
}

}  // namespace persistd
