// Fuzzes the pickle opcode scanner and the symbolic stack with arbitrary
// bytes.
//
//  1. PickleScanner alone walks the whole input: every opcode starts where
//     the previous one ended and lies inside the input, as do its
//     arguments; at an error the position stays put.
//  2. SymbolicStack::Run (the fast path that decodes hot opcodes itself)
//     and a loop of PickleScanner::Next + SymbolicStack::Apply must report
//     the same events at the same opcodes, the same wrapper builds and the
//     same final status, as symbolic_stack.h promises; with the default
//     memory budget and with one so small that it runs out anywhere.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "server/format/pickle_limits.h"
#include "server/format/symbolic_stack.h"
#include "server/fuzz/fuzz_util.h"

namespace persistd {
namespace fuzz {
namespace {

// Events are reported for at most this many opcodes, so a long input of
// FRAMEs stays fast.
constexpr int kMaxEvents = 4096;

bool Within(absl::string_view data, absl::string_view part) {
  if (part.empty()) return true;
  return part.data() >= data.data() &&
         part.data() + part.size() <= data.data() + data.size();
}

void ScanAll(absl::string_view data) {
  PickleScanner scanner(data);
  PickleOp op;
  uint64_t expected = 0;
  while (!scanner.AtEnd()) {
    absl::Status status = scanner.Next(&op);
    if (!status.ok()) {
      FUZZ_CHECK(absl::IsDataLoss(status), status);
      FUZZ_CHECK(scanner.position() == expected, "moved on an error");
      return;
    }
    FUZZ_CHECK(op.offset == expected && op.length >= 1 &&
                   op.end() <= data.size() && scanner.position() == op.end(),
               absl::StrCat("opcode at ", op.offset, " length ", op.length));
    FUZZ_CHECK(static_cast<uint8_t>(data[op.offset]) == op.code);
    FUZZ_CHECK(Within(data.substr(op.offset, op.length), op.arg) &&
               Within(data.substr(op.offset, op.length), op.arg2));
    switch (op.code) {
      case pickle_op::kPut:
      case pickle_op::kBinPut:
      case pickle_op::kLongBinPut:
      case pickle_op::kGet:
      case pickle_op::kBinGet:
      case pickle_op::kLongBinGet:
        FUZZ_CHECK(op.has_int && op.int_value >= 0);
        break;
      case pickle_op::kFrame:
        FUZZ_CHECK(op.has_int && static_cast<uint64_t>(op.int_value) <=
                                     data.size() - op.end());
        break;
      default:
        break;
    }
    expected = op.end();
  }
}

// What one way of running the stack reported.
struct Trace {
  std::vector<std::string> events;
  absl::Status status;
  uint64_t position = 0;
};

std::string DescribeEvent(SymbolicStack::Event event, const PickleOp& op,
                          const SymbolicStack& stack) {
  std::string out =
      absl::StrCat(static_cast<int>(event), "@", op.offset, ":", op.code);
  if (event == SymbolicStack::Event::kWrapperBuild) {
    const WrapperBuild& build = stack.build();
    const ArrayLayout& layout = build.layout;
    absl::StrAppend(&out, " class ", static_cast<int>(build.klass), " start ",
                    build.start_offset, " object ", layout.object, " nbytes ",
                    layout.nbytes, " too_large ", layout.too_large, " padded ",
                    layout.padded, " alignment ", layout.alignment, " dtype ",
                    layout.dtype, " itemsize ", layout.itemsize, " fortran ",
                    layout.fortran_order, " ndim ", layout.shape.size());
    for (uint64_t dim : layout.shape) absl::StrAppend(&out, ",", dim);
    FUZZ_CHECK(build.start_offset < op.offset);
  }
  if (event == SymbolicStack::Event::kStop) {
    absl::StrAppend(&out, " stopped ",
                    static_cast<int>(stack.stopped().kind()));
  }
  return out;
}

Trace RunFast(absl::string_view data, uint64_t budget_limit) {
  PickleScanner scanner(data);
  MemoryBudget budget(budget_limit);
  SymbolicStack stack(&budget);
  PickleOp op;
  Trace trace;
  for (int i = 0; i < kMaxEvents; ++i) {
    SymbolicStack::Event event = SymbolicStack::Event::kNone;
    trace.status = stack.Run(&scanner, &op, &event);
    if (!trace.status.ok()) break;
    FUZZ_CHECK(event != SymbolicStack::Event::kNone);
    trace.events.push_back(DescribeEvent(event, op, stack));
    if (event == SymbolicStack::Event::kStop) break;
  }
  trace.position = scanner.position();
  return trace;
}

Trace RunSlow(absl::string_view data, uint64_t budget_limit) {
  PickleScanner scanner(data);
  MemoryBudget budget(budget_limit);
  SymbolicStack stack(&budget);
  PickleOp op;
  Trace trace;
  while (static_cast<int>(trace.events.size()) < kMaxEvents) {
    SymbolicStack::Event event = SymbolicStack::Event::kNone;
    trace.status = scanner.Next(&op);
    if (trace.status.ok()) trace.status = stack.Apply(op, &event);
    if (!trace.status.ok()) break;
    if (event == SymbolicStack::Event::kNone) continue;
    trace.events.push_back(DescribeEvent(event, op, stack));
    if (event == SymbolicStack::Event::kStop) break;
  }
  trace.position = scanner.position();
  return trace;
}

void ExpectSameTrace(absl::string_view input, uint64_t budget_limit) {
  const Trace fast = RunFast(input, budget_limit);
  const Trace slow = RunSlow(input, budget_limit);
  const size_t n = std::min(fast.events.size(), slow.events.size());
  for (size_t i = 0; i < n; ++i) {
    FUZZ_CHECK(fast.events[i] == slow.events[i],
               absl::StrCat("event ", i, ": Run ", fast.events[i], " / Apply ",
                            slow.events[i]));
  }
  FUZZ_CHECK(fast.events.size() == slow.events.size(),
             absl::StrCat(fast.events.size(), " events from Run, ",
                          slow.events.size(), " from Apply"));
  FUZZ_CHECK(fast.status == slow.status,
             absl::StrCat("Run: ", fast.status.ToString(),
                          " / Apply: ", slow.status.ToString()));
  // After an error the position differs (Run's fast path stops before the
  // failing opcode, Next moves past it); it is not part of the result.
  if (fast.status.ok()) FUZZ_CHECK(fast.position == slow.position);
}

}  // namespace
}  // namespace fuzz
}  // namespace persistd

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace persistd;        // NOLINT
  using namespace persistd::fuzz;  // NOLINT
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  ScanAll(input);
  ExpectSameTrace(input, PickleLimits::kDefaultMaxIndexMemory);
  // A tight budget, so running out of it is reached at every opcode.
  ExpectSameTrace(input, 16 << 10);
  return 0;
}
