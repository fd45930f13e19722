// Command-line options of the persistd daemon and their defaults.
#ifndef PERSISTD_SERVER_DAEMON_OPTIONS_H_
#define PERSISTD_SERVER_DAEMON_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace persistd {

inline constexpr char kPersistdVersion[] = "0.1.0";

struct DaemonOptions {
  std::string store_dir;
  std::string socket_path;
  uint64_t cache_bytes = 0;
  int codec_threads = 1;
  bool fsync = false;
  // What indexing one file may cost (PickleLimits): the pickle part of
  // its decoded stream, and the indexer's memory besides it.
  uint64_t max_pickle_bytes = uint64_t{256} << 20;
  uint64_t max_pickle_memory = uint64_t{32} << 20;
  bool help = false;
  bool version = false;
};

// Parses argv (without argv[0]). Defaults come from the environment:
//   --store   $PERSISTD_STORE, else $XDG_DATA_HOME/persistd, else
//             ~/.local/share/persistd
//   --socket  $PERSISTD_SOCKET, else $XDG_RUNTIME_DIR/persistd.sock, else
//             /tmp/persistd-$UID/persistd.sock
//   --cache-bytes  $PERSISTD_CACHE_BYTES, else a quarter of physical memory
//   --threads  the number of online CPUs
//   --fsync / --no-fsync  $PERSISTD_FSYNC=1/0, else off
//   --max-pickle-bytes   256M
//   --max-pickle-memory  32M
absl::StatusOr<DaemonOptions> ParseDaemonOptions(
    const std::vector<std::string>& args);

// The --help text.
std::string DaemonUsage();

}  // namespace persistd

#endif  // PERSISTD_SERVER_DAEMON_OPTIONS_H_
