// numpy's dtypes as pickles carry them, followed without numpy: a dtype is
// made by REDUCE of numpy.dtype(code, align, copy) (or StringDType's
// function) and completed by BUILD with numpy's __setstate__ tuple
// (version, byteorder, subarray, names, fields, elsize, alignment,
// flags[, metadata]), whose metadata may hold a datetime unit. From these
// the table knows each dtype's item size and whether it holds objects, and
// states numpy's dtype.str when it can be told exactly.
//
// Invariants:
//  1. records_ only grows, one record per dtype object; a kDtype tag is a
//     handle to records_[tag.dtype_index()], so a reallocation invalidates
//     nothing.
//  2. Tags are values, but dtypes are objects: Build updates the record in
//     place, so a dtype memoized (or DUPed) before its BUILD set its item
//     size, byte order and datetime unit shows them wherever it is fetched
//     later, as the real unpickler's shared object would.
//  3. The capacity of records_ is charged to the budget.
//
// Not thread-safe.
#ifndef PERSISTD_SERVER_FORMAT_NUMPY_DTYPE_H_
#define PERSISTD_SERVER_FORMAT_NUMPY_DTYPE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/format/pickle_limits.h"
#include "server/format/symbolic_tag.h"

namespace persistd {

// numpy's datetime units, numbered 1 ("Y") to kUnitGeneric; 0 is none.
inline constexpr uint32_t kUnitGeneric = 14;
uint32_t DatetimeUnit(absl::string_view s);

// One numpy.dtype object: what its REDUCE args and BUILD state said.
struct DtypeRecord {
  char kind = 0;            // letter of the dtype code ("f8": 'f'), else 0
  char byteorder = 0;       // '<', '>', '|' from the state ('=' as '<');
                            // 0 before BUILD or when it is not one of them
  bool sized = false;       // itemsize is known
  bool object = false;      // dtype.hasobject
  bool structured = false;  // the state has fields or a subarray
  uint32_t unit = 0;        // datetime unit, 0 if unknown
  uint32_t unit_count = 0;  // datetime unit multiplier ("10s": 10)
  uint64_t itemsize = 0;
};

// numpy's dtype.str for `dtype` when it can be stated exactly ("<f8",
// "|S10", "<U10", "<M8[ns]", "|O"), else empty (structured, void, no byte
// order, an unknown unit, ...).
std::string DtypeString(const DtypeRecord& dtype);

class DtypeTable {
 public:
  explicit DtypeTable(MemoryBudget* budget) : budget_(budget) {}
  DtypeTable(const DtypeTable&) = delete;
  DtypeTable& operator=(const DtypeTable&) = delete;

  // Makes *tag the new dtype object that calling `callable` (kNumpyDtype or
  // kStringDtypeFn) with `args` returns. False when the budget does not
  // allow another record.
  bool New(GlobalClass callable, const SymbolicTag& args, SymbolicTag* tag);

  // BUILD of the dtype `dtype` with `state`: numpy's __setstate__ when it
  // is a kDtypeState, nothing otherwise (invariant 2).
  void Build(const SymbolicTag& dtype, const SymbolicTag& state);

  // The record of a kDtype tag of this table, or null.
  const DtypeRecord* Find(uint32_t index) const {
    return index < records_.size() ? &records_[index] : nullptr;
  }

 private:
  MemoryBudget* const budget_;
  std::vector<DtypeRecord> records_;
};

// Recognizes the tuples numpy's pickles are made of in a tuple of the n
// items at `items`, whose general summary *tuple holds (symbolic_stack.h):
// a datetime metadata tuple (unit, count[, events] or [, 1, events]), a
// dtype state's last item (metadata, unit tuple), and a dtype __setstate__
// tuple of 5 to 9 items, which turns *tuple into a kDtypeState tag.
void SummarizeNumpyTuple(const SymbolicTag* items, size_t n,
                         SymbolicTag* tuple);

}  // namespace persistd

#endif  // PERSISTD_SERVER_FORMAT_NUMPY_DTYPE_H_
