// WriteDump writes one joblib file into a descriptor the client created
// (its temp file beside the target): it splices the client's skeleton
// pickle, wrapper states and array bytes into joblib's stream
// (format/joblib_writer) and compresses it on the fly (codec/).
//
// The client publishes the file itself (linkat/rename with its own
// credentials), so nothing here touches a path. Uncompressed dumps leave a
// hole for every EXTERNAL array: the client writes those bytes from the
// array's own buffer, the only copy they ever get.
#ifndef PERSISTD_SERVER_STORE_DUMP_WRITER_H_
#define PERSISTD_SERVER_STORE_DUMP_WRITER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/persistd.pb.h"
#include "server/store/payload_ready.h"

namespace persistd {

// `payload` holds the bytes the request's extents refer to; `fd` is the
// empty target, open for writing at offset 0; `name` is for messages.
// `ready(offset)` is called before the stream reads payload bytes below
// `offset` (in slices of at most 256 KiB); its error ends the dump. On
// error the target holds a partial stream: the client discards it.
// `progress`, when set, is told how many payload bytes the encoder has
// consumed: as it goes, and payload.size() once the file is complete.
using DumpProgress = std::function<void(uint64_t consumed)>;
absl::StatusOr<v1::DumpReply> WriteDump(const v1::DumpRequest& request,
                                        absl::string_view payload, int fd,
                                        const std::string& name, int threads,
                                        const PayloadReady& ready,
                                        const DumpProgress& progress = nullptr);

// A DumpProgress that writes the count where a streamed payload's client
// reads it (DumpRequest.payload_streamed): little-endian at bytes 8..16 of
// the memfd `payload_fd`, with pwrite (the daemon's mapping of the payload
// is read-only). `payload_fd` must outlive it.
DumpProgress ProgressToPayloadHeader(int payload_fd);

}  // namespace persistd

#endif  // PERSISTD_SERVER_STORE_DUMP_WRITER_H_
