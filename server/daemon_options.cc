#include "server/daemon_options.h"

#include <ctype.h>
#include <stdlib.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/default_paths.h"

namespace persistd {

namespace {

std::string Env(const char* name) {
  const char* value = ::getenv(name);
  return value == nullptr ? "" : value;
}

// Accepts 123, 10K, 512M, 4G (binary units).
bool ParseBytes(absl::string_view text, uint64_t* out) {
  uint64_t scale = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': scale = uint64_t{1} << 10; break;
      case 'M': case 'm': scale = uint64_t{1} << 20; break;
      case 'G': case 'g': scale = uint64_t{1} << 30; break;
      case 'T': case 't': scale = uint64_t{1} << 40; break;
      default: break;
    }
    if (scale != 1) text.remove_suffix(1);
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(text, &n)) return false;
  *out = n * scale;
  return true;
}

// The cache budget when --cache-bytes is not given: $PERSISTD_CACHE_BYTES
// in the flag's syntax (a value the daemon ignored silently once cost a
// user an hour: a bad one is an error naming the variable), else a quarter
// of physical memory.
absl::StatusOr<uint64_t> DefaultCacheBytes() {
  const std::string env = Env("PERSISTD_CACHE_BYTES");
  if (!env.empty()) {
    uint64_t bytes = 0;
    if (!ParseBytes(env, &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PERSISTD_CACHE_BYTES='", env,
          "' is not a size (e.g. 1073741824, 150M, 2G): fix or unset it"));
    }
    return bytes;
  }
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page_size = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return uint64_t{4} << 30;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) / 4;
}

// $PERSISTD_FSYNC: 1/0 (also true/false, yes/no, on/off); unset or empty
// means off. Anything else is an error rather than a silent "off".
absl::StatusOr<bool> DefaultFsync() {
  std::string env = Env("PERSISTD_FSYNC");
  for (char& c : env) c = static_cast<char>(::tolower(static_cast<unsigned char>(c)));
  if (env.empty() || env == "0" || env == "false" || env == "no" || env == "off") {
    return false;
  }
  if (env == "1" || env == "true" || env == "yes" || env == "on") return true;
  return absl::InvalidArgumentError(absl::StrCat(
      "PERSISTD_FSYNC='", Env("PERSISTD_FSYNC"), "' is not 1 or 0: fix or unset it"));
}

// $PERSISTD_LOG_LEVEL, else info.
absl::StatusOr<log::Level> DefaultLogLevel() {
  const std::string env = Env("PERSISTD_LOG_LEVEL");
  if (env.empty()) return log::Level::kInfo;
  absl::StatusOr<log::Level> level = log::ParseLevel(env);
  if (!level.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PERSISTD_LOG_LEVEL=", level.status().message(), ": fix or unset it"));
  }
  return level;
}

}  // namespace

std::string LogFile(const DaemonOptions& options) {
  if (!options.log_file.empty()) return options.log_file;
  return options.store_dir + "/persistd.log";
}

std::string DaemonUsage() {
  return absl::StrCat(
      "usage: persistd [--store DIR] [--socket PATH] [--cache-bytes N] [--threads N]\n"
      "                [--fsync | --no-fsync] [--sweep-seconds N]\n"
      "                [--max-pickle-bytes N] [--max-pickle-memory N]\n"
      "                [--log-level LEVEL] [--log-file PATH]\n"
      "\n"
      "persistd serves joblib-compatible dump/load to local clients over gRPC on a\n"
      "Unix socket. It does all compression and decompression, writes files\n"
      "atomically, and hands array data to clients as shared, read-only segments:\n"
      "N processes loading the same compressed file share one decompressed copy.\n"
      "\n"
      "options:\n"
      "  --store DIR        daemon state: cached segments\n"
      "                     (default: $PERSISTD_STORE, else $XDG_DATA_HOME/persistd,\n"
      "                     else ~/.local/share/persistd; now: ", DefaultStoreDir(), ")\n"
      "  --socket PATH      Unix socket to serve, created with mode 0600 in a 0700\n"
      "                     directory if the directory is missing; descriptors\n"
      "                     travel on PATH.fds beside it (default:\n"
      "                     $PERSISTD_SOCKET, else $XDG_RUNTIME_DIR/persistd.sock,\n"
      "                     else /tmp/persistd-$UID/persistd.sock; now: ", DefaultSocketPath(), ")\n"
      "  --cache-bytes N    budget for cached segments; unused ones are evicted\n"
      "                     least-recently-used first (suffixes K, M, G, T;\n"
      "                     default: $PERSISTD_CACHE_BYTES, same syntax, else\n"
      "                     1/4 of RAM)\n"
      "  --threads N        compression threads per dump (default: CPUs online)\n"
      "  --fsync            clients fsync each dumped file before publishing it and\n"
      "                     its directory after, so a published file survives a\n"
      "                     power loss; --no-fsync: only atomic against crashes of\n"
      "                     processes (default: $PERSISTD_FSYNC=1/0, else off, as\n"
      "                     joblib, LevelDB and RocksDB default)\n"
      "  --sweep-seconds N  every N seconds, evict the cached segments whose source\n"
      "                     file was deleted or replaced: they can never serve a\n"
      "                     load again (default: 60; 0: never)\n"
      "  --max-pickle-bytes N\n"
      "                     refuse to load a file whose pickle part (its decoded\n"
      "                     stream less raw array data, held in memory while it is\n"
      "                     indexed) is larger (default: 256M)\n"
      "  --max-pickle-memory N\n"
      "                     refuse to load a file whose indexing needs more memory\n"
      "                     for the unpickler's stack and memo and the list of\n"
      "                     arrays: this bounds what a tiny hostile file (millions\n"
      "                     of MARKs in a few hundred compressed bytes) can cost\n"
      "                     (default: 32M)\n"
      "  --log-level LEVEL  debug, info, warning or error (default:\n"
      "                     $PERSISTD_LOG_LEVEL, else info). info names the source\n"
      "                     and client pid of each dump, load, segment build and\n"
      "                     eviction; debug adds one line per RPC (method, client\n"
      "                     pid, duration, request and reply bytes)\n"
      "  --log-file PATH    where the log goes, appended to; '-' for stderr\n"
      "                     (default: STORE/persistd.log, wherever the daemon was\n"
      "                     started from: by hand, by a client, by systemd).\n"
      "                     Errors that stop the daemon from starting also go to\n"
      "                     stderr. A file that reaches 64 MiB is renamed with\n"
      "                     .1 before its extension (persistd.1.log; the one\n"
      "                     before becomes .2, the oldest is dropped)\n"
      "  --help             show this text\n"
      "  --version          print the version\n"
      "\n"
      "Only processes of the daemon's own uid (and root) may connect. One daemon\n"
      "per socket and per store. SIGTERM or SIGINT shuts it down cleanly. Log lines\n"
      "are timestamped and leveled: `persistctl status` names the log file.\n");
}

absl::StatusOr<DaemonOptions> ParseDaemonOptions(
    const std::vector<std::string>& args) {
  DaemonOptions options;
  options.store_dir = DefaultStoreDir();
  options.socket_path = DefaultSocketPath();
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  options.codec_threads = cpus > 0 ? static_cast<int>(cpus) : 1;
  // Environment defaults are read after the flags: a flag that overrides a
  // bad variable makes it harmless, and --help/--version always work.
  bool cache_flag = false;
  bool fsync_flag = false;
  bool log_level_flag = false;

  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_value = false;
    size_t eq = flag.find('=');
    if (flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    auto take = [&]() -> absl::StatusOr<std::string> {
      if (has_value) return value;
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
      }
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") {
      options.help = true;
    } else if (flag == "--version") {
      options.version = true;
    } else if (flag == "--fsync" && !has_value) {
      options.fsync = true;
      fsync_flag = true;
    } else if (flag == "--no-fsync" && !has_value) {
      options.fsync = false;
      fsync_flag = true;
    } else if (flag == "--store") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      options.store_dir = *v;
    } else if (flag == "--socket") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      options.socket_path = *v;
    } else if (flag == "--cache-bytes") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      if (!ParseBytes(*v, &options.cache_bytes)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--cache-bytes: '", *v, "' is not a size (e.g. 1073741824, 512M, 4G)"));
      }
      cache_flag = true;
    } else if (flag == "--max-pickle-bytes" || flag == "--max-pickle-memory") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      uint64_t* out = flag == "--max-pickle-bytes" ? &options.max_pickle_bytes
                                                    : &options.max_pickle_memory;
      if (!ParseBytes(*v, out) || *out == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            flag, ": '", *v, "' is not a positive size (e.g. 268435456, 256M, 1G)"));
      }
    } else if (flag == "--log-level") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      absl::StatusOr<log::Level> level = log::ParseLevel(*v);
      if (!level.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--log-level: ", level.status().message()));
      }
      options.log_level = *level;
      log_level_flag = true;
    } else if (flag == "--log-file") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      if (v->empty()) {
        return absl::InvalidArgumentError(
            "--log-file needs a path, or '-' for stderr");
      }
      options.log_file = *v;
    } else if (flag == "--sweep-seconds") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtoi(*v, &options.sweep_seconds) || options.sweep_seconds < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--sweep-seconds: '", *v, "' is not a number of seconds (0 to never sweep)"));
      }
    } else if (flag == "--threads") {
      absl::StatusOr<std::string> v = take();
      if (!v.ok()) return v.status();
      if (!absl::SimpleAtoi(*v, &options.codec_threads) || options.codec_threads < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("--threads: '", *v, "' is not a positive integer"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option '", args[i], "' (see persistd --help)"));
    }
  }
  if (options.help || options.version) return options;
  if (!cache_flag) {
    absl::StatusOr<uint64_t> bytes = DefaultCacheBytes();
    if (!bytes.ok()) return bytes.status();
    options.cache_bytes = *bytes;
  }
  if (!fsync_flag) {
    absl::StatusOr<bool> fsync = DefaultFsync();
    if (!fsync.ok()) return fsync.status();
    options.fsync = *fsync;
  }
  if (!log_level_flag) {
    absl::StatusOr<log::Level> level = DefaultLogLevel();
    if (!level.ok()) return level.status();
    options.log_level = *level;
  }
  if (options.store_dir.empty() || options.socket_path.empty()) {
    return absl::InvalidArgumentError("--store and --socket must not be empty");
  }
  return options;
}

}  // namespace persistd
