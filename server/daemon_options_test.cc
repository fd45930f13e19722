#include "server/daemon_options.h"

#include <stdlib.h>

#include "gtest/gtest.h"

namespace persistd {
namespace {

TEST(DaemonOptionsTest, EnvironmentGivesDefaults) {
  ::setenv("PERSISTD_STORE", "/tmp/s", 1);
  ::setenv("PERSISTD_SOCKET", "/tmp/p.sock", 1);
  ::setenv("PERSISTD_CACHE_BYTES", "1234", 1);
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions({});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->store_dir, "/tmp/s");
  EXPECT_EQ(options->socket_path, "/tmp/p.sock");
  EXPECT_EQ(options->cache_bytes, 1234u);
}

TEST(DaemonOptionsTest, FlagsOverrideEnvironment) {
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions(
      {"--store", "/a", "--socket=/b.sock", "--cache-bytes", "2G", "--threads", "3"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->store_dir, "/a");
  EXPECT_EQ(options->socket_path, "/b.sock");
  EXPECT_EQ(options->cache_bytes, uint64_t{2} << 30);
  EXPECT_EQ(options->codec_threads, 3);
}

TEST(DaemonOptionsTest, PickleLimitsHaveStatedDefaultsAndFlags) {
  absl::StatusOr<DaemonOptions> defaults = ParseDaemonOptions({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->max_pickle_bytes, uint64_t{256} << 20);
  EXPECT_EQ(defaults->max_pickle_memory, uint64_t{32} << 20);
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions(
      {"--max-pickle-bytes", "1G", "--max-pickle-memory=64M"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->max_pickle_bytes, uint64_t{1} << 30);
  EXPECT_EQ(options->max_pickle_memory, uint64_t{64} << 20);
  EXPECT_FALSE(ParseDaemonOptions({"--max-pickle-memory", "0"}).ok());
  EXPECT_FALSE(ParseDaemonOptions({"--max-pickle-bytes", "x"}).ok());
}

TEST(DaemonOptionsTest, FallbackSocketIsPerUser) {
  ::unsetenv("PERSISTD_SOCKET");
  ::unsetenv("XDG_RUNTIME_DIR");
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions({});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->socket_path,
            "/tmp/persistd-" + std::to_string(::getuid()) + "/persistd.sock");
}

TEST(DaemonOptionsTest, BadInputNamesTheProblem) {
  EXPECT_FALSE(ParseDaemonOptions({"--bogus"}).ok());
  EXPECT_FALSE(ParseDaemonOptions({"--store"}).ok());
  absl::StatusOr<DaemonOptions> bad = ParseDaemonOptions({"--cache-bytes", "lots"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("lots"), std::string::npos);
}

TEST(DaemonOptionsTest, HelpMentionsEveryFlag) {
  std::string usage = DaemonUsage();
  for (const char* flag : {"--store", "--socket", "--cache-bytes", "--threads",
                           "--max-pickle-bytes", "--max-pickle-memory", "--help"}) {
    EXPECT_NE(usage.find(flag), std::string::npos) << flag;
  }
}

TEST(DaemonOptionsTest, CacheBytesVariableTakesTheFlagsSyntax) {
  ::setenv("PERSISTD_CACHE_BYTES", "150M", 1);
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->cache_bytes, uint64_t{150} << 20);
  ::setenv("PERSISTD_CACHE_BYTES", "2G", 1);
  options = ParseDaemonOptions({});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->cache_bytes, uint64_t{2} << 30);
  ::unsetenv("PERSISTD_CACHE_BYTES");
}

TEST(DaemonOptionsTest, BadVariableIsAnErrorNamingIt) {
  ::setenv("PERSISTD_CACHE_BYTES", "150MB", 1);
  absl::StatusOr<DaemonOptions> bad = ParseDaemonOptions({});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("PERSISTD_CACHE_BYTES"), std::string::npos);
  EXPECT_NE(bad.status().message().find("150MB"), std::string::npos);
  // A flag overrides the variable, and --help/--version always work.
  EXPECT_TRUE(ParseDaemonOptions({"--cache-bytes", "1G"}).ok());
  EXPECT_TRUE(ParseDaemonOptions({"--help"}).ok());
  EXPECT_TRUE(ParseDaemonOptions({"--version"}).ok());
  ::unsetenv("PERSISTD_CACHE_BYTES");

  ::setenv("PERSISTD_FSYNC", "maybe", 1);
  bad = ParseDaemonOptions({});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("PERSISTD_FSYNC"), std::string::npos);
  ::setenv("PERSISTD_FSYNC", "true", 1);
  absl::StatusOr<DaemonOptions> on = ParseDaemonOptions({});
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE(on->fsync);
  ::unsetenv("PERSISTD_FSYNC");
}

TEST(DaemonOptionsTest, SweepSeconds) {
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions({});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->sweep_seconds, 60);
  options = ParseDaemonOptions({"--sweep-seconds=0"});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->sweep_seconds, 0);
  absl::StatusOr<DaemonOptions> bad = ParseDaemonOptions({"--sweep-seconds", "-1"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--sweep-seconds"), std::string::npos);
}

TEST(DaemonOptionsTest, LogLevelAndFile) {
  absl::StatusOr<DaemonOptions> options = ParseDaemonOptions({"--store", "/s"});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->log_level, log::Level::kInfo);
  EXPECT_EQ(LogFile(*options), "/s/persistd.log");

  options = ParseDaemonOptions({"--log-level=debug", "--log-file", "-"});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->log_level, log::Level::kDebug);
  EXPECT_EQ(LogFile(*options), "-");

  absl::StatusOr<DaemonOptions> bad = ParseDaemonOptions({"--log-level", "loud"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--log-level: 'loud'"), std::string::npos);
  EXPECT_FALSE(ParseDaemonOptions({"--log-file="}).ok());

  ::setenv("PERSISTD_LOG_LEVEL", "warning", 1);
  options = ParseDaemonOptions({});
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->log_level, log::Level::kWarning);
  ::setenv("PERSISTD_LOG_LEVEL", "verbose", 1);
  bad = ParseDaemonOptions({});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("PERSISTD_LOG_LEVEL='verbose'"),
            std::string::npos);
  EXPECT_TRUE(ParseDaemonOptions({"--log-level", "error"}).ok());  // the flag wins
  ::unsetenv("PERSISTD_LOG_LEVEL");
}

}  // namespace
}  // namespace persistd
