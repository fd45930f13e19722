// The one conversion between the codec layer's Codec and the protocol's
// v1::Codec. The two enums are kept value-for-value equal (checked below at
// compile time), so the conversion is a cast that can never silently pick
// another codec when either enum grows.
#ifndef PERSISTD_SERVER_CODEC_CODEC_PROTO_H_
#define PERSISTD_SERVER_CODEC_CODEC_PROTO_H_

#include "proto/persistd.pb.h"
#include "server/codec/codec.h"

namespace persistd {

#define PERSISTD_SAME_CODEC(ours, wire)                                  \
  static_assert(static_cast<int>(Codec::ours) == static_cast<int>(wire), \
                #ours " and " #wire " must be the same codec")
PERSISTD_SAME_CODEC(kNone, v1::CODEC_NONE);
PERSISTD_SAME_CODEC(kZlib, v1::CODEC_ZLIB);
PERSISTD_SAME_CODEC(kGzip, v1::CODEC_GZIP);
PERSISTD_SAME_CODEC(kBz2, v1::CODEC_BZ2);
PERSISTD_SAME_CODEC(kLzma, v1::CODEC_LZMA);
PERSISTD_SAME_CODEC(kXz, v1::CODEC_XZ);
PERSISTD_SAME_CODEC(kLz4, v1::CODEC_LZ4);
PERSISTD_SAME_CODEC(kZstd, v1::CODEC_ZSTD);
#undef PERSISTD_SAME_CODEC
static_assert(static_cast<int>(Codec::kZstd) == v1::Codec_MAX,
              "a codec was added to one enum only");

inline v1::Codec ToProto(Codec codec) { return static_cast<v1::Codec>(codec); }

// A request's codec; values outside the enum reach NewEncoder/NewDecoder,
// which refuse them by name.
inline Codec FromProto(v1::Codec codec) { return static_cast<Codec>(codec); }

}  // namespace persistd

#endif  // PERSISTD_SERVER_CODEC_CODEC_PROTO_H_
