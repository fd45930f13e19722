// ArrayPaths tells where each array of a loaded file sits in its object
// graph (["trees"][3]["value"], .coef_), from the skeleton pickle of the
// daemon's Load reply, whose array wrappers are calls of the global
// `__persistd__ materialize`.
//
// It follows the pickle's stack, memo and containers symbolically, as
// Python's unpickler would build them, without executing anything, and
// records only the edges that lead to arrays. A daemon that states each
// array's path in its reply makes this unnecessary (the client then uses
// the daemon's paths); this reads the pickle the daemon sends today.
//
// The skeleton is untrusted input: corrupt opcodes, stack underflow and a
// memo or object count past the limits below end the walk with an error,
// never a crash, and the cost is linear in the skeleton's size.
#ifndef PERSISTD_CLIENT_CPP_ARRAY_PATHS_H_
#define PERSISTD_CLIENT_CPP_ARRAY_PATHS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace persistd {

struct ArrayPath {
  // Python indexing syntax from the value to the array: ["key"] for a dict
  // key (JSON-escaped), [3] for an int key or a list/tuple index, [?] for
  // a key of another type, .name for an attribute (a BUILD state dict),
  // .__args__[i] for a constructor argument, .__state__ for a state passed
  // to __setstate__. "" is the value itself; "?" means unknown.
  std::string path;
  // The last dict key or attribute on `path`, unescaped; "" if the path
  // ends otherwise.
  std::string name;
};

// What one walk may hold; beyond, the walk gives up (ResourceExhausted).
struct ArrayPathLimits {
  // Nodes and edges recorded: containers and objects that hold arrays,
  // and the references between them.
  size_t max_objects = size_t{1} << 20;
  size_t max_memo = size_t{1} << 20;      // memo entries
  size_t max_stack = size_t{1} << 20;     // stack items and marks
  size_t max_path_bytes = 4096;           // longer paths read "?"
};

// The paths of the first `array_count` materialize calls, in call order
// (the order of LoadReply.arrays). Arrays the walk cannot place get "?".
absl::StatusOr<std::vector<ArrayPath>> ArrayPaths(
    absl::string_view skeleton, size_t array_count,
    const ArrayPathLimits& limits = ArrayPathLimits());

}  // namespace persistd

#endif  // PERSISTD_CLIENT_CPP_ARRAY_PATHS_H_
