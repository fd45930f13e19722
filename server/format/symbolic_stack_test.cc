#include "server/format/symbolic_stack.h"

#include <cstdint>
#include <string>
#include <vector>

#include "common/pickle/pickle_scanner.h"
#include "gtest/gtest.h"
#include "server/format/format_test_util.h"
#include "server/format/scanner_vectors.h"

namespace persistd {
namespace {

using testing_util::L;

using testing_util::ExpectedOp;
using testing_util::kNoInt;
using testing_util::kNoSize;
using testing_util::ScannerVector;
using testing_util::kScannerVectors;

// Applies the whole pickle opcode by opcode; returns the first error.
absl::Status ApplyAll(absl::string_view pickle, std::vector<uint64_t>* events) {
  PickleScanner scanner(pickle);
  SymbolicStack stack;
  while (true) {
    PickleOp op;
    absl::Status status = scanner.Next(&op);
    SymbolicStack::Event event = SymbolicStack::Event::kNone;
    if (status.ok()) status = stack.Apply(op, &event);
    if (!status.ok()) return status;
    if (event != SymbolicStack::Event::kNone) events->push_back(op.offset);
    if (event == SymbolicStack::Event::kStop) return absl::OkStatus();
  }
}

// The same with SymbolicStack::Run.
absl::Status RunAll(absl::string_view pickle, std::vector<uint64_t>* events) {
  PickleScanner scanner(pickle);
  SymbolicStack stack;
  while (true) {
    PickleOp op;
    SymbolicStack::Event event;
    absl::Status status = stack.Run(&scanner, &op, &event);
    if (!status.ok()) return status;
    events->push_back(op.offset);
    if (event == SymbolicStack::Event::kStop) return absl::OkStatus();
  }
}

TEST(SymbolicStackTest, FollowsPicklesOfEveryProtocol) {
  // All but the last vector are real pickles (the last one only lists the
  // opcodes no Python 3 pickler writes).
  const size_t n = sizeof(kScannerVectors) / sizeof(kScannerVectors[0]);
  for (size_t i = 0; i + 1 < n; ++i) {
    SCOPED_TRACE(testing::Message() << "vector " << i);
    std::vector<uint64_t> applied, ran;
    absl::Status status = ApplyAll(kScannerVectors[i].data, &applied);
    ASSERT_TRUE(status.ok()) << status;
    status = RunAll(kScannerVectors[i].data, &ran);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(applied, ran);
    EXPECT_EQ(applied.back() + 1, kScannerVectors[i].data.size());
  }
}

void ExpectRunError(absl::string_view pickle, const std::string& message) {
  std::vector<uint64_t> events;
  absl::Status applied = ApplyAll(pickle, &events);
  absl::Status ran = RunAll(pickle, &events);
  EXPECT_EQ(applied.message(), message);
  EXPECT_EQ(ran.message(), message);
  EXPECT_EQ(applied.code(), absl::StatusCode::kDataLoss);
}

TEST(SymbolicStackTest, ReportsWhatTheUnpicklerWouldRejectAtTheRightOffset) {
  ExpectRunError("0.", "pickle stream is corrupt: unpickling stack underflow "
                       "at offset 0");
  ExpectRunError("N(\x85.", "pickle stream is corrupt: unpickling stack "
                            "underflow at offset 2");
  ExpectRunError("Nt.", "pickle stream is corrupt: could not find MARK at "
                        "offset 1");
  ExpectRunError("N(N\x86.", "pickle stream is corrupt: unpickling stack "
                             "underflow at offset 3");
  ExpectRunError("N(\x94.", "pickle stream is corrupt: unpickling stack "
                            "underflow at offset 2");
  ExpectRunError(L("}(K\001u."), "pickle stream is corrupt: odd number of "
                                 "items for SETITEMS at offset 4");
  ExpectRunError(L("Nh\000."), "pickle stream is corrupt: memo value not "
                               "found at index 0 at offset 1");
  ExpectRunError(".", "pickle stream is corrupt: unpickling stack underflow "
                      "at offset 0");
}

TEST(SymbolicStackTest, MemoizeUsesTheNumberOfEntriesNotTheLargestIndex) {
  // LONG_BINPUT 5, then MEMOIZE stores at index 1 (one entry so far).
  std::vector<uint64_t> events;
  EXPECT_TRUE(ApplyAll(L("\200\004Nr\005\000\000\000N\224h\001h\005000."),
                       &events)
                  .ok());
  ExpectRunError(L("\200\004Nr\005\000\000\000N\224h\002."),
                 "pickle stream is corrupt: memo value not found at index 2 "
                 "at offset 10");
  // A huge explicit index is kept sparse, not allocated densely.
  EXPECT_TRUE(ApplyAll(L("Nr\377\377\377\377j\377\377\377\377\224h\00100."),
                       &events)
                  .ok());
}

// A pickle of `n` copies of `op` after PROTO 4, then STOP.
std::string Repeated(absl::string_view op, size_t n) {
  std::string pickle = "\x80\x04";
  pickle.reserve(2 + op.size() * n + 1);
  for (size_t i = 0; i < n; ++i) pickle.append(op.data(), op.size());
  pickle += '.';
  return pickle;
}

// Runs `pickle` (Apply and Run) with a budget of `limit` bytes; expects it
// refused for memory, within the budget.
void ExpectRefusedWithin(const std::string& pickle, uint64_t limit) {
  for (bool run : {false, true}) {
    SCOPED_TRACE(run ? "Run" : "Apply");
    MemoryBudget budget(limit);
    SymbolicStack stack(&budget);
    PickleScanner scanner(pickle);
    absl::Status status;
    SymbolicStack::Event event = SymbolicStack::Event::kNone;
    while (status.ok() && event != SymbolicStack::Event::kStop) {
      PickleOp op;
      if (run) {
        status = stack.Run(&scanner, &op, &event);
      } else {
        status = scanner.Next(&op);
        if (status.ok()) status = stack.Apply(op, &event);
      }
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find("--max-pickle-memory"), std::string::npos)
        << status;
    EXPECT_LE(budget.used(), limit);
  }
}

TEST(SymbolicStackTest, RefusesMarkAndEmptyListBombsWithinTheBudget) {
  // 945 bytes of zstd hold 30M MARKs; an unbounded stack took 1.2 GB.
  ExpectRefusedWithin(Repeated("(", 1 << 20), 1 << 20);
  ExpectRefusedWithin(Repeated("]", 1 << 20), 1 << 20);
  ExpectRefusedWithin(Repeated("N", 1 << 20), 1 << 20);
}

TEST(SymbolicStackTest, TheDefaultBudgetRefusesAMarkBomb) {
  // 4M MARKs would take 160 MB of stack and marks; the default budget is
  // PickleLimits::kDefaultMaxIndexMemory.
  std::vector<uint64_t> events;
  absl::Status status = RunAll(Repeated("(", 4 << 20), &events);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("32 MiB"), std::string::npos) << status;
}

TEST(SymbolicStackTest, RefusesMemoBombsWithinTheBudget) {
  // Millions of memo entries of an irrelevant object.
  ExpectRefusedWithin("\x80\x04N" + Repeated("\x94", 4 << 20).substr(2),
                      1 << 20);
  // Relevant objects ('shape') memoized at ever new indices.
  ExpectRefusedWithin(
      "\x80\x04\x8c\x05shape" + Repeated("\x94", 1 << 20).substr(2),
      1 << 20);
  // Sparse indices: each hash map entry is charged.
  std::string sparse = "\x80\x04N";
  for (uint32_t i = 0; i < (1 << 18); ++i) {
    const uint32_t index = 0x40000000u + i * 7919u;
    sparse += 'r';
    sparse.append(reinterpret_cast<const char*>(&index), 4);  // little-endian
  }
  sparse += '.';
  ExpectRefusedWithin(sparse, 1 << 20);
}

TEST(SymbolicStackTest, LargeMemoIndicesDoNotBuyALargeTable) {
  // LONG_BINPUT at 4095, 8191, ... each doubled the dense memo table: 27
  // opcodes made it 512 MB. Now they stay sparse, and are still found.
  std::string pickle = "\x80\x04N";
  for (int bit = 12; bit <= 30; ++bit) {
    const uint32_t index = (uint32_t{1} << bit) - 1;
    pickle += 'r';
    pickle.append(reinterpret_cast<const char*>(&index), 4);
  }
  const uint32_t last = (uint32_t{1} << 30) - 1;
  pickle += 'j';
  pickle.append(reinterpret_cast<const char*>(&last), 4);
  pickle += "0.";
  MemoryBudget budget(1 << 20);
  SymbolicStack stack(&budget);
  PickleScanner scanner(pickle);
  PickleOp op;
  SymbolicStack::Event event;
  absl::Status status;
  do {
    status = stack.Run(&scanner, &op, &event);
  } while (status.ok() && event != SymbolicStack::Event::kStop);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_LT(budget.used(), 64u << 10);
}

// Found by server/fuzz:pickle_fuzzer: Run grew the stack before it decoded
// the next opcode, so where the budget ran out at a corrupt opcode it
// reported the budget, and Next and Apply the corrupt opcode.
TEST(SymbolicStackTest, RunReportsWhatApplyReportsWhenTheBudgetRunsOut) {
  constexpr uint64_t kLimit = 4096;
  // Where pushing None runs out of the budget.
  const std::string nones = Repeated("N", 10000);
  uint64_t full = 0;
  {
    PickleScanner scanner(nones);
    MemoryBudget budget(kLimit);
    SymbolicStack stack(&budget);
    PickleOp op;
    SymbolicStack::Event event;
    absl::Status status;
    while (status.ok()) {
      status = scanner.Next(&op);
      if (status.ok()) status = stack.Apply(op, &event);
    }
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    full = op.offset;
  }
  const std::string pickle = nones.substr(0, full) + "\x01";
  PickleScanner scanner(pickle);
  MemoryBudget budget(kLimit);
  SymbolicStack stack(&budget);
  PickleOp op;
  SymbolicStack::Event event;
  absl::Status status = stack.Run(&scanner, &op, &event);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("unknown opcode 0x01"), std::string::npos)
      << status;
}

TEST(SymbolicStackTest, PopRemovesAMarkLikeTheCUnpickler) {
  std::vector<uint64_t> events;
  EXPECT_TRUE(ApplyAll("N(0.", &events).ok());
}

}  // namespace
}  // namespace persistd
