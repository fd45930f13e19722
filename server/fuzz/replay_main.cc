// Runs a fuzz target's LLVMFuzzerTestOneInput without libFuzzer, over the
// built-in seeds of --seeds=<target>, every file in --regressions=<dir>
// (which may be missing: no regressions yet), and every file named (every
// file inside a directory named). It is the main of the fuzz binaries in the
// default (gcc) build, so a finding reproduces there too:
//   bazel run //server/fuzz:codec_fuzzer -- /path/to/crash-file
// and of the replay tests that `bazel test //...` runs.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/fuzz/fuzz_seeds.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void RunOne(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                         input.size());
}

bool RunFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    return false;
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  std::fprintf(stderr, "running %s\n", path.c_str());
  RunOne(contents.str());
  return true;
}

// Runs `path`, or each regular file in it if it is a directory.
bool RunPath(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "cannot stat %s\n", path.c_str());
    return false;
  }
  if (!S_ISDIR(st.st_mode)) return RunFile(path);
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return false;
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') names.push_back(entry->d_name);
  }
  ::closedir(dir);
  bool ok = true;
  for (const std::string& name : names) ok &= RunPath(path + "/" + name);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  int inputs = 0;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--seeds=")) {
      const std::vector<std::string> seeds = persistd::fuzz::SeedsFor(arg);
      if (seeds.empty()) {
        std::fprintf(stderr, "no seeds for target '%s'\n", argv[i] + 8);
        return 2;
      }
      for (const std::string& seed : seeds) RunOne(seed);
      std::fprintf(stderr, "ran %zu seeds\n", seeds.size());
      inputs += static_cast<int>(seeds.size());
    } else if (absl::ConsumePrefix(&arg, "--regressions=")) {
      struct stat st;
      const std::string dir(arg);
      if (::stat(dir.c_str(), &st) != 0) continue;
      if (!RunPath(dir)) return 1;
      ++inputs;
    } else if (absl::StartsWith(arg, "-")) {
      // libFuzzer flags, e.g. from deploy/fuzz.sh: not for the replayer.
      continue;
    } else {
      if (!RunPath(argv[i])) return 1;
      ++inputs;
    }
  }
  std::printf("%d inputs passed\n", inputs);
  return 0;
}
