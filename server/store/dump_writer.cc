#include "server/store/dump_writer.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/codec/codec.h"
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

// Forwards to `next` in slices of kSlice bytes until `cancelled` says the
// client is gone. It sits in front of the encoder, which would otherwise
// take a whole array in one call: an abandoned dump stops within one
// slice's compression time (xz -6 at a few MB/s: well under 100 ms).
class CancellableSink : public ByteSink {
 public:
  static constexpr size_t kSlice = 256 << 10;

  CancellableSink(ByteSink* next, const std::function<bool()>& cancelled,
                  const std::string& name)
      : next_(next), cancelled_(cancelled), name_(name) {}
  absl::Status Append(absl::string_view data) override {
    do {
      absl::Status status = Check();
      if (status.ok()) status = next_->Append(data.substr(0, kSlice));
      if (!status.ok()) return status;
      data.remove_prefix(std::min(data.size(), kSlice));
    } while (!data.empty());
    return absl::OkStatus();
  }
  absl::Status Finish() override {
    absl::Status status = Check();
    return status.ok() ? next_->Finish() : status;
  }
  absl::Status Skip(uint64_t size) override {
    absl::Status status = Check();
    return status.ok() ? next_->Skip(size) : status;
  }

 private:
  absl::Status Check() const {
    if (!cancelled_()) return absl::OkStatus();
    return absl::CancelledError(
        absl::StrCat("the dump of ", name_, " was abandoned by its client"));
  }
  ByteSink* const next_;
  const std::function<bool()>& cancelled_;
  const std::string& name_;
};

}  // namespace

absl::StatusOr<v1::DumpReply> WriteDump(const v1::DumpRequest& request,
                                        absl::string_view payload, int fd,
                                        const std::string& name, int threads,
                                        const std::function<bool()>& cancelled) {
  absl::StatusOr<absl::string_view> skeleton =
      Slice(payload, request.skeleton(), "skeleton");
  if (!skeleton.ok()) return skeleton.status();
  const Codec codec = static_cast<Codec>(request.codec());
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
    absl::StatusOr<std::unique_ptr<ByteSink>> made =
        NewEncoder(codec, request.level(), threads, &file_sink);
    if (!made.ok()) return made.status();
    encoder = *std::move(made);
    stream_sink = encoder.get();
  }
  CancellableSink guarded(stream_sink, cancelled, name);
  ByteSink* sink = &guarded;
  std::vector<uint64_t> holes;
  absl::StatusOr<uint64_t> stream_bytes =
      WriteJoblibStream(*skeleton, arrays, sink, &holes);
  if (!stream_bytes.ok()) return stream_bytes.status();
  // An encoder's Finish writes its trailer and finishes the file sink.
  absl::Status status = sink->Finish();
  if (!status.ok()) return status;

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
