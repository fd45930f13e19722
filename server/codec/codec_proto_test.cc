#include "server/codec/codec_proto.h"

#include <string>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"

namespace persistd {
namespace {

// Every wire codec converts to the codec of the same name and back.
TEST(CodecProtoTest, EveryWireCodecIsTheCodecOfItsName) {
  for (int i = v1::Codec_MIN; i <= v1::Codec_MAX; ++i) {
    ASSERT_TRUE(v1::Codec_IsValid(i));
    const v1::Codec wire = static_cast<v1::Codec>(i);
    std::string name = v1::Codec_Name(wire).substr(sizeof("CODEC_") - 1);
    absl::AsciiStrToLower(&name);
    EXPECT_EQ(CodecName(FromProto(wire)), name);
    EXPECT_EQ(ToProto(FromProto(wire)), wire);
  }
}

}  // namespace
}  // namespace persistd
