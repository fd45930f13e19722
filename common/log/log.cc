#include "common/log/log.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/io/errno_status.h"
#include "spdlog/logger.h"
#include "spdlog/sinks/rotating_file_sink.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace persistd {
namespace log {
namespace {

constexpr char kPattern[] = "%Y-%m-%dT%H:%M:%S.%e%z %l %v";

spdlog::level::level_enum ToSpdlog(Level level) {
  switch (level) {
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarning: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
  }
  return spdlog::level::info;
}

// The process's log. Invariant: logger_ is never null; startup_stderr_ is
// the extra stderr sink of a file log (null for a stderr log), whose level
// is err until EndStartup() and off after.
class Log {
 public:
  Log() { Install(MakeLogger({std::make_shared<spdlog::sinks::stderr_sink_mt>()}), nullptr); }

  bool Enabled(Level level) const {
    return static_cast<int>(level) >= level_.load(std::memory_order_relaxed);
  }

  void Write(Level level, absl::string_view message) {
    std::shared_ptr<spdlog::logger> logger;
    {
      absl::ReaderMutexLock lock(&mu_);
      logger = logger_;
    }
    logger->log(ToSpdlog(level), "{}",
                fmt::string_view(message.data(), message.size()));
  }

  absl::Status Configure(const Options& options) {
    std::vector<spdlog::sink_ptr> sinks;
    std::shared_ptr<spdlog::sinks::sink> startup_stderr;
    if (options.file == "-") {
      sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
    } else {
      // Created 0600 by us: spdlog's fopen would give 0666 & ~umask. No
      // symlink is followed (the store directory is private anyway).
      const int fd = ::open(options.file.c_str(),
                            O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                            0600);
      if (fd < 0) return ErrnoStatus("open the log file", options.file, errno);
      ::close(fd);
      try {
        sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
            options.file, options.max_file_bytes, options.kept_files));
      } catch (const spdlog::spdlog_ex& e) {
        return absl::UnavailableError(
            absl::StrCat("cannot open the log file ", options.file, ": ", e.what()));
      }
      if (options.errors_to_stderr) {
        startup_stderr = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        startup_stderr->set_level(spdlog::level::err);
        sinks.push_back(startup_stderr);
      }
    }
    std::shared_ptr<spdlog::logger> logger = MakeLogger(std::move(sinks));
    logger->set_level(ToSpdlog(options.level));
    level_.store(static_cast<int>(options.level), std::memory_order_relaxed);
    Install(std::move(logger), std::move(startup_stderr));
    return absl::OkStatus();
  }

  void EndStartup() {
    absl::ReaderMutexLock lock(&mu_);
    if (startup_stderr_ != nullptr) startup_stderr_->set_level(spdlog::level::off);
  }

 private:
  static std::shared_ptr<spdlog::logger> MakeLogger(std::vector<spdlog::sink_ptr> sinks) {
    auto logger = std::make_shared<spdlog::logger>("persistd", sinks.begin(), sinks.end());
    logger->set_pattern(kPattern);
    logger->set_level(spdlog::level::debug);
    logger->flush_on(spdlog::level::debug);  // every line, see log.h
    return logger;
  }

  void Install(std::shared_ptr<spdlog::logger> logger,
               std::shared_ptr<spdlog::sinks::sink> startup_stderr) {
    absl::MutexLock lock(&mu_);
    logger_ = std::move(logger);
    startup_stderr_ = std::move(startup_stderr);
  }

  std::atomic<int> level_{static_cast<int>(Level::kInfo)};
  absl::Mutex mu_;
  std::shared_ptr<spdlog::logger> logger_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<spdlog::sinks::sink> startup_stderr_ ABSL_GUARDED_BY(mu_);
};

// Never destroyed: threads may log while the process exits.
Log& TheLog() {
  static Log* const log = new Log;
  return *log;
}

}  // namespace

absl::StatusOr<Level> ParseLevel(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "debug") return Level::kDebug;
  if (lower == "info") return Level::kInfo;
  if (lower == "warning" || lower == "warn") return Level::kWarning;
  if (lower == "error") return Level::kError;
  return absl::InvalidArgumentError(absl::StrCat(
      "'", name, "' is not a log level (debug, info, warning or error)"));
}

const char* LevelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
  }
  return "info";
}

absl::Status Configure(const Options& options) { return TheLog().Configure(options); }
void EndStartup() { TheLog().EndStartup(); }
bool Enabled(Level level) { return TheLog().Enabled(level); }
void Write(Level level, absl::string_view message) { TheLog().Write(level, message); }

}  // namespace log
}  // namespace persistd
