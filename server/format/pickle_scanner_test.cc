#include "common/pickle/pickle_scanner.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/pickle/pickle_opcodes.h"
#include "gtest/gtest.h"
#include "server/format/format_test_util.h"
#include "server/format/scanner_vectors.h"

namespace persistd {
namespace {

using testing_util::L;
using testing_util::ScanAll;

using testing_util::ExpectedOp;
using testing_util::kNoInt;
using testing_util::kNoSize;
using testing_util::ScannerVector;
using testing_util::kScannerVectors;

bool IsIntOpcode(uint8_t code) {
  switch (code) {
    case pickle_op::kInt: case pickle_op::kBinInt: case pickle_op::kBinInt1:
    case pickle_op::kBinInt2: case pickle_op::kLong: case pickle_op::kLong1:
    case pickle_op::kLong4:
      return true;
    default:
      return false;
  }
}

// Scans `data` to its end, or to the first error; checks every opcode
// stays inside the buffer. Returns the status of the last Next().
absl::Status ScanChecked(absl::string_view data, size_t* count) {
  PickleScanner scanner(data);
  *count = 0;
  while (!scanner.AtEnd()) {
    PickleOp op;
    const uint64_t before = scanner.position();
    absl::Status status = scanner.Next(&op);
    if (!status.ok()) {
      EXPECT_EQ(scanner.position(), before);
      EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
      return status;
    }
    EXPECT_EQ(op.offset, before);
    EXPECT_GE(op.length, 1u);
    EXPECT_LE(op.end(), data.size());
    EXPECT_EQ(scanner.position(), op.end());
    for (absl::string_view arg : {op.arg, op.arg2}) {
      if (arg.empty()) continue;
      EXPECT_GE(arg.data(), data.data() + op.offset);
      EXPECT_LE(arg.data() + arg.size(), data.data() + op.end());
    }
    ++*count;
  }
  return absl::OkStatus();
}

TEST(PickleScannerTest, MatchesPickletoolsOnEveryOpcode) {
  for (const ScannerVector& vector : kScannerVectors) {
    std::vector<PickleOp> ops;
    ASSERT_TRUE(ScanAll(vector.data, &ops).ok());
    ASSERT_EQ(ops.size(), vector.count);
    for (size_t i = 0; i < vector.count; ++i) {
      const ExpectedOp& want = vector.ops[i];
      const PickleOp& got = ops[i];
      SCOPED_TRACE(testing::Message() << "opcode " << i << " at " << want.offset);
      EXPECT_EQ(got.code, want.code);
      EXPECT_EQ(got.offset, want.offset);
      EXPECT_EQ(got.length, want.length);
      if (want.int_arg != kNoInt) {
        EXPECT_TRUE(got.has_int);
        EXPECT_EQ(got.int_value, want.int_arg);
      } else if (IsIntOpcode(want.code)) {
        EXPECT_FALSE(got.has_int);  // does not fit in int64
      }
      if (want.size != kNoSize) {
        EXPECT_EQ(static_cast<int64_t>(got.arg.size()), want.size);
        // A view into the buffer, not a copy.
        EXPECT_EQ(got.arg.data() + got.arg.size(),
                  vector.data.data() + got.end());
      }
    }
  }
}

TEST(PickleScannerTest, DecodesTextArguments) {
  std::vector<PickleOp> ops;
  ASSERT_TRUE(ScanAll("cjoblib.numpy_pickle\nNumpyArrayWrapper\n"
                      "S'quoted'\nVraw\nI01\nI-42\nL7L\np12\ng3\nP0\n",
                      &ops)
                  .ok());
  ASSERT_EQ(ops.size(), 9u);
  EXPECT_EQ(ops[0].arg, "joblib.numpy_pickle");
  EXPECT_EQ(ops[0].arg2, "NumpyArrayWrapper");
  EXPECT_EQ(ops[1].arg, "quoted");
  EXPECT_EQ(ops[2].arg, "raw");
  EXPECT_EQ(ops[3].int_value, 1);
  EXPECT_EQ(ops[4].int_value, -42);
  EXPECT_EQ(ops[5].int_value, 7);
  EXPECT_EQ(ops[6].int_value, 12);
  EXPECT_EQ(ops[7].int_value, 3);
  EXPECT_EQ(ops[8].arg, "0");
  EXPECT_FALSE(ops[8].has_int);
}

TEST(PickleScannerTest, NegativeAndLargeInts) {
  std::vector<PickleOp> ops;
  // BININT -2, LONG1 -1 (1 byte), LONG1 2**63 (9 bytes: too large).
  ASSERT_TRUE(ScanAll(L("J\376\377\377\377" "\212\001\377"
                        "\212\011\000\000\000\000\000\000\000\200\000"),
                      &ops)
                  .ok());
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_EQ(ops[0].int_value, -2);
  EXPECT_EQ(ops[1].int_value, -1);
  EXPECT_FALSE(ops[2].has_int);
}

void ExpectError(absl::string_view data, const std::string& message) {
  PickleScanner scanner(data);
  absl::Status status;
  while (status.ok() && !scanner.AtEnd()) {
    PickleOp op;
    status = scanner.Next(&op);
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), message);
}

TEST(PickleScannerTest, ErrorsNameTheProblemAndOffset) {
  ExpectError("N\xff", "pickle stream is corrupt: unknown opcode 0xff at offset 1");
  ExpectError("N\x8c\x05" "abc",
              "pickle stream is corrupt: truncated at offset 1");
  ExpectError("K", "pickle stream is corrupt: truncated at offset 0");
  ExpectError("I12", "pickle stream is corrupt: truncated at offset 0");
  ExpectError("cmodule\nname",
              "pickle stream is corrupt: truncated at offset 0");
  // A length near 2**64 must not wrap around.
  ExpectError(L("\216\377\377\377\377\377\377\377\377xyz"),
              "pickle stream is corrupt: truncated at offset 0");
  ExpectError(L("\213\377\377\377\377"),
              "pickle stream is corrupt: LONG4 with a negative length at "
              "offset 0");
  ExpectError("Sabc\n",
              "pickle stream is corrupt: STRING argument is not quoted at "
              "offset 0");
  ExpectError("N0p-1\n",
              "pickle stream is corrupt: invalid memo index at offset 2");
  ExpectError(L("\225\003\000\000\000\000\000\000\000K\001K\001"),
              "pickle stream is corrupt: opcode runs past the end of its "
              "frame at offset 11");
  ExpectError(L("\225\011\000\000\000\000\000\000\000"
                "\225\000\000\000\000\000\000\000\000"),
              "pickle stream is corrupt: FRAME before the end of the "
              "current frame at offset 9");
  ExpectError(L("\225\011\000\000\000\000\000\000\000K"),
              "pickle stream is corrupt: truncated at offset 0");
  PickleScanner empty("");
  PickleOp op;
  EXPECT_EQ(empty.Next(&op).message(),
            "pickle stream is corrupt: truncated at offset 0");
}

TEST(PickleScannerTest, TracksFrames) {
  // FRAME of 2 bytes (K\x01), then an opcode outside any frame.
  const absl::string_view data = L("\225\002\000\000\000\000\000\000\000K\001N");
  PickleScanner scanner(data);
  PickleOp op;
  ASSERT_TRUE(scanner.Next(&op).ok());
  EXPECT_EQ(op.int_value, 2);
  EXPECT_TRUE(scanner.InFrame());
  EXPECT_EQ(scanner.opcode_limit(), 11u);
  ASSERT_TRUE(scanner.Next(&op).ok());
  EXPECT_FALSE(scanner.InFrame());
  EXPECT_EQ(scanner.opcode_limit(), data.size());
  ASSERT_TRUE(scanner.Next(&op).ok());
  EXPECT_TRUE(scanner.AtEnd());
}

TEST(PickleScannerTest, EveryPrefixIsAnErrorOrAPrefixOfTheOpcodes) {
  for (const ScannerVector& vector : kScannerVectors) {
    for (size_t n = 0; n <= vector.data.size(); ++n) {
      size_t count;
      absl::Status status =
          ScanChecked(absl::string_view(vector.data.data(), n), &count);
      ASSERT_LE(count, vector.count);
      if (status.ok()) {
        // Ended on an opcode boundary.
        EXPECT_EQ(n, count == vector.count ? vector.data.size()
                                           : vector.ops[count].offset);
      } else {
        ASSERT_LT(count, vector.count);
        EXPECT_EQ(status.message(),
                  "pickle stream is corrupt: truncated at offset " +
                      std::to_string(vector.ops[count].offset));
      }
    }
  }
}

TEST(PickleScannerTest, RandomAndMutatedInputsNeverCrash) {
  std::mt19937_64 random(20240607);
  // Bytes drawn from the opcodes make the scanner go further than noise.
  const std::string alphabet =
      "()]}.0123NKMJIhqgpjrabcdeilostuRQPSTUVXFGLBC\x80\x81\x85\x86\x87"
      "\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\n"
      "\x00\x01\xff";
  for (int i = 0; i < 20000; ++i) {
    std::string data(random() % 64, '\0');
    for (char& c : data) {
      c = (i % 2) ? static_cast<char>(random())
                  : alphabet[random() % alphabet.size()];
    }
    size_t count;
    (void)ScanChecked(data, &count);
  }
  for (const ScannerVector& vector : kScannerVectors) {
    for (int i = 0; i < 500; ++i) {
      std::string data(vector.data);
      for (int flips = 1 + random() % 4; flips > 0; --flips) {
        data[random() % data.size()] = static_cast<char>(random());
      }
      size_t count;
      (void)ScanChecked(data, &count);
    }
  }
}

}  // namespace
}  // namespace persistd
