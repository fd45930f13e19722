// Writes the built-in seeds of a fuzz target into a directory, one file
// each (seed-000, seed-001, ...), for deploy/fuzz.sh:
//   make_seeds <target> <directory>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/fuzz/fuzz_seeds.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <target> <directory>\n", argv[0]);
    return 2;
  }
  const std::vector<std::string> seeds = persistd::fuzz::SeedsFor(argv[1]);
  if (seeds.empty()) {
    std::fprintf(stderr, "no seeds for target '%s'\n", argv[1]);
    return 2;
  }
  for (size_t i = 0; i < seeds.size(); ++i) {
    const std::string path = absl::StrFormat("%s/seed-%03d", argv[2], i);
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (file == nullptr ||
        std::fwrite(seeds[i].data(), 1, seeds[i].size(), file) !=
            seeds[i].size() ||
        std::fclose(file) != 0) {
      std::perror(path.c_str());
      return 1;
    }
  }
  return 0;
}
