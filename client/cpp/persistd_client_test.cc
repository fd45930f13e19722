// Talks to a real persistd started on a temporary socket.
#include "client/cpp/persistd_client.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace persistd {
namespace {

class DaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Short paths: Unix socket names are limited to 107 bytes.
    char dir[] = "/tmp/pdc.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_ = dir_ + "/s.sock";
    std::string binary = std::string(::getenv("TEST_SRCDIR")) + "/persistd/server/persistd";
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string store = dir_ + "/store";
      ::execl(binary.c_str(), binary.c_str(), "--socket", socket_.c_str(),
              "--store", store.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      if (Client::Connect(socket_).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "persistd did not start";
  }
  static void TearDownTestSuite() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }

  static std::string dir_;
  static std::string socket_;
  static pid_t pid_;
};

std::string DaemonTest::dir_;
std::string DaemonTest::socket_;
pid_t DaemonTest::pid_ = -1;

template <typename T>
absl::string_view Bytes(const std::vector<T>& v) {
  return absl::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

TEST_F(DaemonTest, DumpArraysThenLoadViewsEveryCodec) {
  auto client = Client::Connect(socket_);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<double> weights(100000);
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = i * 0.25;
  std::vector<int32_t> labels = {3, 1, 4, 1, 5, 9};
  for (v1::Codec codec : {v1::CODEC_NONE, v1::CODEC_ZLIB, v1::CODEC_GZIP, v1::CODEC_BZ2,
                          v1::CODEC_LZMA, v1::CODEC_XZ, v1::CODEC_LZ4, v1::CODEC_ZSTD}) {
    std::string path = dir_ + "/arrays-" + v1::Codec_Name(codec) + ".pkl";
    absl::Status status = (*client)->DumpArrays(
        path,
        {{"weights", NumpyDtype<double>(), {1000, 100}, Bytes(weights)},
         {"labels", NumpyDtype<int32_t>(), {6}, Bytes(labels)}},
        codec);
    ASSERT_TRUE(status.ok()) << v1::Codec_Name(codec) << ": " << status;
    auto file = (*client)->Load(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ((*file)->arrays().size(), 2u);
    auto w = (*file)->View<double>("weights");
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->shape(), (std::vector<uint64_t>{1000, 100}));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data()) % 64, 0u);
    EXPECT_TRUE(std::equal(w->begin(), w->end(), weights.begin()));
    auto l = (*file)->View<int32_t>("labels");
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_TRUE(std::equal(l->begin(), l->end(), labels.begin()));
    // A wrong type is an error, not a reinterpretation.
    EXPECT_FALSE((*file)->View<float>("weights").ok());
    EXPECT_FALSE((*file)->View<double>("missing").ok());
  }
}

TEST_F(DaemonTest, SecondLoadIsACacheHit) {
  auto client = Client::Connect(socket_);
  ASSERT_TRUE(client.ok());
  std::vector<float> x = {1, 2, 3};
  std::string path = dir_ + "/hit.pkl";
  ASSERT_TRUE((*client)->DumpArrays(path, {{"x", NumpyDtype<float>(), {3}, Bytes(x)}},
                                    v1::CODEC_LZ4).ok());
  auto first = (*client)->Load(path);
  auto second = (*client)->Load(path);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE((*first)->cache_hit());
  EXPECT_TRUE((*second)->cache_hit());
  EXPECT_EQ((*first)->generation(), (*second)->generation());
}

TEST_F(DaemonTest, ErrorsNameTheProblem) {
  auto client = Client::Connect(socket_);
  ASSERT_TRUE(client.ok());
  auto missing = (*client)->Load(dir_ + "/nope.pkl");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  std::vector<float> x = {1, 2, 3};
  absl::Status bad = (*client)->DumpArrays(
      dir_ + "/bad.pkl", {{"x", NumpyDtype<float>(), {4}, Bytes(x)}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(::access((dir_ + "/bad.pkl").c_str(), F_OK), 0);  // nothing written
  auto status = (*client)->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_GE(status->loads(), 1u);
}

TEST(ConnectTest, NoDaemonIsAClearError) {
  auto client = Client::Connect("/tmp/persistd-no-such-daemon.sock");
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("not running"), std::string::npos);
}

}  // namespace
}  // namespace persistd
