// PickleEmitter writes the few pickle opcodes the C++ client needs to
// produce joblib files: a dict of named arrays (the skeleton, arrays as
// persistent ids) and NumpyArrayWrapper state dicts with a numpy dtype.
// Protocol 4, no memo, no frames (the daemon frames the final stream).
// Opcodes come from common/pickle/pickle_opcodes.h, the daemon's own.
#ifndef PERSISTD_CLIENT_CPP_PICKLE_EMITTER_H_
#define PERSISTD_CLIENT_CPP_PICKLE_EMITTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace persistd {

class PickleEmitter {
 public:
  PickleEmitter();  // writes PROTO 4

  void Str(absl::string_view s);
  void Int(int64_t v);
  void Bool(bool v);
  void None();
  void Global(absl::string_view module, absl::string_view name);
  void Tuple(const std::vector<int64_t>& ints);
  void EmptyDict();
  void Mark();
  void SetItems();
  void Tuple3();     // the top three items
  void TupleMark();  // everything since the mark
  void Reduce();
  void Build();
  void PersistentId(int64_t id);  // pushes id, BINPERSID

  // Appends STOP and returns the pickle.
  std::string Finish();

 private:
  void Op(uint8_t code) { out_.push_back(static_cast<char>(code)); }

  std::string out_;
};

// The pickle of a NumpyArrayWrapper state dict for an array of `dtype` (a
// numpy dtype.str of a numeric kind, "<f8", "|b1", ">i4"), `shape` and
// memory order ('C' or 'F'), with exactly the keys joblib writes.
std::string WrapperStatePickle(absl::string_view dtype,
                               const std::vector<uint64_t>& shape,
                               char order = 'C');

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_PICKLE_EMITTER_H_
