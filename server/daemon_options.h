// Command-line options of the persistd daemon and their defaults.
#ifndef PERSISTD_SERVER_DAEMON_OPTIONS_H_
#define PERSISTD_SERVER_DAEMON_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/log/log.h"

namespace persistd {

inline constexpr char kPersistdVersion[] = "0.1.0";

struct DaemonOptions {
  std::string store_dir;
  std::string socket_path;
  uint64_t cache_bytes = 0;
  int codec_threads = 1;
  bool fsync = false;
  // How often segments whose source file was deleted or replaced are
  // evicted (StaleSweeper); 0 never.
  int sweep_seconds = 60;
  // What indexing one file may cost (PickleLimits): the pickle part of
  // its decoded stream, and the indexer's memory besides it.
  uint64_t max_pickle_bytes = uint64_t{256} << 20;
  uint64_t max_pickle_memory = uint64_t{32} << 20;
  log::Level log_level = log::Level::kInfo;
  // Where the log goes: a file, or "-" for stderr. Parsing leaves it
  // empty when not given; LogFile() resolves that.
  std::string log_file;
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
//   --sweep-seconds  60
//   --max-pickle-bytes   256M
//   --max-pickle-memory  32M
//   --log-level  $PERSISTD_LOG_LEVEL, else info
//   --log-file   <store>/persistd.log
absl::StatusOr<DaemonOptions> ParseDaemonOptions(
    const std::vector<std::string>& args);

// The log's destination: --log-file, else <store>/persistd.log (the one
// place the daemon logs to however it was started: by hand, by a client's
// autostart or by systemd).
std::string LogFile(const DaemonOptions& options);

// The --help text.
std::string DaemonUsage();

}  // namespace persistd

#endif  // PERSISTD_SERVER_DAEMON_OPTIONS_H_
