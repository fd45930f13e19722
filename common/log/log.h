// The daemon's log: timestamped, leveled lines in one file (or stderr).
//
// Every component logs through these functions; only log.cc includes the
// logging library (spdlog), so it can be replaced in one file. The log is
// the one process-wide object of the daemon: every component may need to
// report, and threading a logger through every constructor would add a
// parameter to each of them for no gain in testability (tests read the log
// file a real daemon writes).
//
// Lines look like
//   2024-05-02T10:11:12.345+02:00 info persistd 0.1.0: serving ...
// Until Configure() succeeds, lines go to stderr at level info. Each line
// is written out (write(2)) before Write returns, so a crash loses none
// and a reader sees a call's line once the call has returned.
//
// Thread-safe: any thread may log at any time; lines are never interleaved.
#ifndef PERSISTD_COMMON_LOG_LOG_H_
#define PERSISTD_COMMON_LOG_LOG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace persistd {
namespace log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" (or "warn"), "error"; anything else is
// InvalidArgument naming the accepted values.
absl::StatusOr<Level> ParseLevel(absl::string_view name);
const char* LevelName(Level level);

struct Options {
  Level level = Level::kInfo;
  // Where lines go: a file, appended to and created with mode 0600, or
  // "-" for stderr.
  std::string file = "-";
  // A file that reaches this size is renamed (persistd.log ->
  // persistd.1.log -> ... -> persistd.<kept_files>.log, the oldest
  // dropped) and a new one started: a busy daemon's info lines (~170 bytes
  // per load) cannot fill the disk.
  size_t max_file_bytes = size_t{64} << 20;
  size_t kept_files = 2;
  // While true, lines at kError also go to stderr when `file` is a file,
  // so whoever started the daemon sees why it did not start (see
  // EndStartup).
  bool errors_to_stderr = true;
};

// Directs the log to `options.file` at `options.level`. On failure (the
// file cannot be opened) the log is unchanged.
absl::Status Configure(const Options& options);

// The daemon serves: from now on errors go only to the log's file.
void EndStartup();

// Whether a line at `level` would be written: lets a caller skip work
// done only for the log.
bool Enabled(Level level);

// Writes one line at `level` (without its newline).
void Write(Level level, absl::string_view message);

template <typename... Args>
void Debug(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (Enabled(Level::kDebug)) Write(Level::kDebug, absl::StrFormat(format, args...));
}
template <typename... Args>
void Info(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (Enabled(Level::kInfo)) Write(Level::kInfo, absl::StrFormat(format, args...));
}
template <typename... Args>
void Warning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (Enabled(Level::kWarning)) {
    Write(Level::kWarning, absl::StrFormat(format, args...));
  }
}
template <typename... Args>
void Error(const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (Enabled(Level::kError)) Write(Level::kError, absl::StrFormat(format, args...));
}

}  // namespace log
}  // namespace persistd

#endif  // PERSISTD_COMMON_LOG_LOG_H_
