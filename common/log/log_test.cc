#include "common/log/log.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace persistd {
namespace log {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(LogTest, ParsesLevelsAndRefusesOthers) {
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  EXPECT_EQ(*ParseLevel("INFO"), Level::kInfo);
  EXPECT_EQ(*ParseLevel("warn"), Level::kWarning);
  EXPECT_EQ(*ParseLevel("warning"), Level::kWarning);
  EXPECT_EQ(*ParseLevel("error"), Level::kError);
  absl::StatusOr<Level> bad = ParseLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("debug, info, warning or error"),
            std::string::npos);
}

TEST(LogTest, WritesTimestampedLeveledLinesAtOrAboveItsLevel) {
  char dir[] = "/tmp/log_test.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/persistd.log";
  Options options;
  options.level = Level::kInfo;
  options.file = path;
  options.errors_to_stderr = false;
  ASSERT_TRUE(Configure(options).ok());
  EXPECT_FALSE(Enabled(Level::kDebug));
  EXPECT_TRUE(Enabled(Level::kInfo));
  Debug("hidden %d", 1);
  Info("shown %s", "here");
  Error("failed: %d", 42);
  const std::string text = ReadAll(path);  // no flush needed: see log.h
  EXPECT_EQ(text.find("hidden"), std::string::npos);
  std::regex line(
      R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d info shown here\n)"
      R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d error failed: 42\n)");
  EXPECT_TRUE(std::regex_match(text, line)) << text;

  options.level = Level::kDebug;
  ASSERT_TRUE(Configure(options).ok());
  Debug("visible %d", 2);
  EXPECT_NE(ReadAll(path).find(" debug visible 2\n"), std::string::npos);

  options.file = std::string(dir) + "/missing/persistd.log";
  absl::Status status = Configure(options);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("missing/persistd.log"), std::string::npos);
  Info("still here");  // the old log stays in use
  EXPECT_NE(ReadAll(path).find(" info still here\n"), std::string::npos);
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST(LogTest, RotatesAFullFileKeepingTheNewestOnes) {
  char dir[] = "/tmp/log_test.XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/persistd.log";
  Options options;
  options.file = path;
  options.errors_to_stderr = false;
  options.max_file_bytes = 1000;
  options.kept_files = 1;
  ASSERT_TRUE(Configure(options).ok());
  for (int i = 0; i < 100; ++i) Info("line %03d of a log that outgrows its file", i);
  const std::string current = ReadAll(path);
  const std::string rotated = ReadAll(std::string(dir) + "/persistd.1.log");
  EXPECT_LE(current.size(), 1000u);
  EXPECT_LE(rotated.size(), 1000u);
  EXPECT_NE(current.find("line 099"), std::string::npos);
  EXPECT_EQ(rotated.find("line 000"), std::string::npos);  // dropped
  EXPECT_FALSE(std::ifstream(std::string(dir) + "/persistd.2.log").good());
  for (const char* name : {"/persistd.log", "/persistd.1.log"}) {
    ::unlink((std::string(dir) + name).c_str());
  }
  ::rmdir(dir);
}

}  // namespace
}  // namespace log
}  // namespace persistd
