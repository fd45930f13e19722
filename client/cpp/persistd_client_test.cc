// Talks to a real persistd started on a temporary socket (and, for the
// refusals, to impostors: an old daemon, another user's socket).
#include "client/cpp/persistd_client.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/cpp/descriptor_channel.h"
#include "client/cpp/dump_target.h"
#include "client/cpp/pickle_emitter.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "proto/persistd.grpc.pb.h"

namespace persistd {
namespace {

template <typename T>
absl::string_view Bytes(const std::vector<T>& v) {
  return absl::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// A fresh directory under /tmp (short: Unix socket names are limited to
// 107 bytes).
std::string MakeTempDir() {
  char dir[] = "/tmp/pdc.XXXXXX";
  if (::mkdtemp(dir) == nullptr) return "";
  return dir;
}

// The names in `dir`, sorted, without "." and "..".
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteFile(const std::string& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), contents.size());
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Sets the umask for one scope.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(previous_); }

 private:
  mode_t previous_;
};

// First in the file: it forks, best done before gRPC has started threads.
TEST(DescriptorChannelTest, RefusesASocketOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to listen as another user";
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/other.fds";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    // SO_PEERCRED reports the credentials of whoever called listen().
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path.c_str(), path.size());
    char c = 'r';
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      c = 'b';
    } else if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
      c = 'u';  // a user namespace without uid 65534 (Bazel's sandbox)
    } else if (::listen(fd, 4) != 0) {
      c = 'l';
    }
    if (::write(ready[1], &c, 1) != 1 || c != 'r') ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  EXPECT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  absl::StatusOr<DescriptorChannel> channel = DescriptorChannel::Connect(path);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
  if (c == 'u') GTEST_SKIP() << "cannot become another user here";
  ASSERT_EQ(c, 'r') << "the impostor failed to listen";
  ASSERT_FALSE(channel.ok());
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(channel.status().message().find("is not persistd of your user"),
            std::string::npos)
      << channel.status();
}

class DaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = MakeTempDir();
    ASSERT_FALSE(dir_.empty());
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
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void SetUp() override {
    auto client = Client::Connect(socket_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    // Each test in a directory of its own, so it can check what is left.
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    test_dir_ = dir_ + "/" + test->name();
    ASSERT_EQ(::mkdir(test_dir_.c_str(), 0755), 0);
  }

  static std::string dir_;
  static std::string socket_;
  static pid_t pid_;
  std::unique_ptr<Client> client_;
  std::string test_dir_;
};

std::string DaemonTest::dir_;
std::string DaemonTest::socket_;
pid_t DaemonTest::pid_ = -1;

TEST_F(DaemonTest, DumpArraysThenLoadViewsEveryCodec) {
  // 1.6 MB: compressed dumps pass their payload as a sealed memfd (it is
  // above the inline limit); uncompressed ones write it from this buffer.
  std::vector<double> weights(200000);
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = i * 0.25;
  std::vector<int32_t> labels = {3, 1, 4, 1, 5, 9};
  for (v1::Codec codec : {v1::CODEC_NONE, v1::CODEC_ZLIB, v1::CODEC_GZIP, v1::CODEC_BZ2,
                          v1::CODEC_LZMA, v1::CODEC_XZ, v1::CODEC_LZ4, v1::CODEC_ZSTD}) {
    std::string path = test_dir_ + "/arrays-" + v1::Codec_Name(codec) + ".pkl";
    absl::Status status = client_->DumpArrays(
        path,
        {{"weights", NumpyDtype<double>(), {1000, 200}, Bytes(weights)},
         {"labels", NumpyDtype<int32_t>(), {6}, Bytes(labels)}},
        codec);
    ASSERT_TRUE(status.ok()) << v1::Codec_Name(codec) << ": " << status;
    auto file = client_->Load(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ((*file)->arrays().size(), 2u);
    auto w = (*file)->View<double>("weights");
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->shape(), (std::vector<uint64_t>{1000, 200}));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data()) % 64, 0u);
    EXPECT_TRUE(std::equal(w->begin(), w->end(), weights.begin()));
    auto l = (*file)->View<int32_t>("labels");
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_TRUE(std::equal(l->begin(), l->end(), labels.begin()));
    // A wrong type is an error, not a reinterpretation.
    EXPECT_FALSE((*file)->View<float>("weights").ok());
    EXPECT_FALSE((*file)->View<double>("missing").ok());
  }
  // Published files only: no temp file stays beside them.
  EXPECT_EQ(Entries(test_dir_).size(), 8u);
}

TEST_F(DaemonTest, SecondLoadIsACacheHit) {
  std::vector<float> x = {1, 2, 3};
  std::string path = test_dir_ + "/hit.pkl";
  // Uncompressed: the daemon warms its cache only after compressed dumps.
  ASSERT_TRUE(client_->DumpArrays(path, {{"x", NumpyDtype<float>(), {3}, Bytes(x)}},
                                  v1::CODEC_NONE).ok());
  auto first = client_->Load(path);
  auto second = client_->Load(path);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE((*first)->cache_hit());
  EXPECT_TRUE((*second)->cache_hit());
  EXPECT_EQ((*first)->generation(), (*second)->generation());
}

TEST_F(DaemonTest, OverwriteIsSeenByTheNextLoad) {
  std::string path = test_dir_ + "/again.pkl";
  for (int32_t value : {1, 2}) {
    std::vector<int32_t> x(1000, value);
    ASSERT_TRUE(client_->DumpArrays(path, {{"x", NumpyDtype<int32_t>(), {1000}, Bytes(x)}})
                    .ok());
    auto file = client_->Load(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto view = (*file)->View<int32_t>("x");
    ASSERT_TRUE(view.ok());
    EXPECT_EQ((*view)[999], value);
  }
}

TEST_F(DaemonTest, ErrorsNameTheProblem) {
  auto missing = client_->Load(test_dir_ + "/nope.pkl");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  std::vector<float> x = {1, 2, 3};
  absl::Status bad = client_->DumpArrays(
      test_dir_ + "/bad.pkl", {{"x", NumpyDtype<float>(), {4}, Bytes(x)}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  absl::Status no_dir = client_->DumpArrays(
      test_dir_ + "/no/such/dir.pkl", {{"x", NumpyDtype<float>(), {3}, Bytes(x)}});
  EXPECT_EQ(no_dir.code(), absl::StatusCode::kNotFound) << no_dir;
  absl::Status to_dir = client_->DumpArrays(
      test_dir_, {{"x", NumpyDtype<float>(), {3}, Bytes(x)}});
  EXPECT_EQ(to_dir.code(), absl::StatusCode::kInvalidArgument) << to_dir;
  EXPECT_TRUE(Entries(test_dir_).empty());  // nothing written
  auto status = client_->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->protocol(), static_cast<uint32_t>(v1::PROTOCOL_CURRENT));
}

TEST_F(DaemonTest, LoadRefusesWhatIsNotARegularFileAtOnce) {
  // A FIFO nobody writes to: opening it for reading must not wait.
  const std::string fifo = test_dir_ + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto start = std::chrono::steady_clock::now();
  auto from_fifo = client_->Load(fifo);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(from_fifo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(from_fifo.status().message().find("a FIFO, not a regular file"),
            std::string::npos)
      << from_fifo.status();
  auto from_dir = client_->Load(test_dir_);
  EXPECT_EQ(from_dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(from_dir.status().message().find("a directory"), std::string::npos);
}

TEST_F(DaemonTest, DumpModesAreWhatOpenWouldGive) {
  std::vector<int64_t> x = {7, 8, 9};
  const std::vector<Client::NamedArray> arrays = {
      {"x", NumpyDtype<int64_t>(), {3}, Bytes(x)}};
  const std::string path = test_dir_ + "/private.pkl";
  {
    ScopedUmask mask(077);
    ASSERT_TRUE(client_->DumpArrays(path, arrays).ok());
    EXPECT_EQ(ModeOf(path), 0600u);
    // An overwrite keeps the file's mode, whatever the umask.
    ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
    ASSERT_TRUE(client_->DumpArrays(path, arrays, v1::CODEC_ZLIB).ok());
    EXPECT_EQ(ModeOf(path), 0640u);
    ASSERT_TRUE(client_->DumpArrays(path, arrays).ok());
    EXPECT_EQ(ModeOf(path), 0640u);
  }
  {
    ScopedUmask mask(022);
    const std::string shared = test_dir_ + "/shared.pkl";
    ASSERT_TRUE(client_->DumpArrays(shared, arrays).ok());
    EXPECT_EQ(ModeOf(shared), 0644u);
  }
  auto file = client_->Load(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto view = (*file)->View<int64_t>("x");
  ASSERT_TRUE(view.ok());
  EXPECT_TRUE(std::equal(view->begin(), view->end(), x.begin()));
}

TEST_F(DaemonTest, DumpWritesThroughASymlink) {
  ASSERT_EQ(::mkdir((test_dir_ + "/real").c_str(), 0755), 0);
  const std::string real = test_dir_ + "/real/data.pkl";
  const std::string link = test_dir_ + "/link.pkl";
  ASSERT_EQ(::symlink("real/data.pkl", link.c_str()), 0);  // dangling at first
  std::vector<float> x = {0.5f, 1.5f};
  for (v1::Codec codec : {v1::CODEC_NONE, v1::CODEC_XZ}) {
    ASSERT_TRUE(client_->DumpArrays(link, {{"x", NumpyDtype<float>(), {2}, Bytes(x)}},
                                    codec)
                    .ok());
    struct stat st;
    ASSERT_EQ(::lstat(link.c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the link was replaced";
    ASSERT_EQ(::lstat(real.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    auto file = client_->Load(real);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->arrays().size(), 1u);
    x[0] += 1;
  }
  EXPECT_EQ(Entries(test_dir_ + "/real"), std::vector<std::string>{"data.pkl"});
}

TEST_F(DaemonTest, FailedDumpLeavesNothingAndKeepsTheOldFile) {
  const std::string path = test_dir_ + "/kept.pkl";
  WriteFile(path, "old contents");
  // The state says 300000 doubles, the buffer holds half: the daemon
  // refuses the request after the client created its temp file.
  std::vector<double> half(150000, 1.0);
  PickleEmitter skeleton;
  skeleton.PersistentId(0);
  const std::string pickle = skeleton.Finish();
  for (v1::Codec codec : {v1::CODEC_NONE, v1::CODEC_ZSTD}) {
    absl::Status status = client_->DumpPickle(
        path, pickle, {{WrapperStatePickle("<f8", {300000}), Bytes(half)}}, codec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(ReadFile(path), "old contents");
    EXPECT_EQ(Entries(test_dir_), std::vector<std::string>{"kept.pkl"});
  }
}

TEST(DumpTargetTest, NamedFallbackIsPublishedOrRemoved) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/out.bin";
  {
    auto target = DumpTarget::Create(path, /*allow_unnamed=*/false);
    ASSERT_TRUE(target.ok()) << target.status();
    ASSERT_FALSE(target->temp_path().empty());
    EXPECT_EQ(target->temp_path().rfind(dir + "/.out.bin.", 0), 0u) << target->temp_path();
    EXPECT_EQ(Entries(dir).size(), 1u);
    // Abandoned: the temp file goes.
  }
  EXPECT_TRUE(Entries(dir).empty());
  {
    ScopedUmask mask(027);
    auto target = DumpTarget::Create(path, /*allow_unnamed=*/false);
    ASSERT_TRUE(target.ok()) << target.status();
    ASSERT_EQ(::write(target->fd(), "hello", 5), 5);
    ASSERT_TRUE(target->Publish(/*sync=*/true).ok());
  }
  EXPECT_EQ(ReadFile(path), "hello");
  EXPECT_EQ(ModeOf(path), 0640u);
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"out.bin"});
  {
    // Over a private file, the temp file is never readable by more people
    // than the file is, not even for a moment.
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    ScopedUmask mask(0);
    auto target = DumpTarget::Create(path, /*allow_unnamed=*/false);
    ASSERT_TRUE(target.ok()) << target.status();
    EXPECT_EQ(ModeOf(target->temp_path()), 0600u);
  }
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

TEST(DumpTargetTest, UnnamedHasNoNameUntilPublished) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/out.bin";
  WriteFile(path, "old");
  ASSERT_EQ(::chmod(path.c_str(), 0604), 0);
  {
    auto target = DumpTarget::Create(path);
    ASSERT_TRUE(target.ok()) << target.status();
    EXPECT_TRUE(target->temp_path().empty());  // O_TMPFILE
    ASSERT_EQ(::write(target->fd(), "new", 3), 3);
    EXPECT_EQ(Entries(dir), std::vector<std::string>{"out.bin"});
  }
  EXPECT_EQ(ReadFile(path), "old");  // abandoned
  {
    auto target = DumpTarget::Create(path);
    ASSERT_TRUE(target.ok()) << target.status();
    ASSERT_EQ(::write(target->fd(), "new", 3), 3);
    ASSERT_TRUE(target->Publish(/*sync=*/false).ok());
    EXPECT_FALSE(target->Publish(false).ok());  // once only
  }
  EXPECT_EQ(ReadFile(path), "new");
  EXPECT_EQ(ModeOf(path), 0604u);
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"out.bin"});
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

// A daemon of an older protocol: answers Status, and nothing else.
class OldDaemon final : public v1::Persistd::Service {
 public:
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*,
                      v1::StatusReply* reply) override {
    reply->set_version("0.1.0");
    reply->set_protocol(1);
    return grpc::Status::OK;
  }
};

TEST(ConnectTest, AnotherProtocolIsRefused) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const std::string socket = dir + "/old.sock";
  OldDaemon service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto client = Client::Connect(socket);
  server->Shutdown();
  ::unlink(socket.c_str());
  ::rmdir(dir.c_str());
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(client.status().message().find("upgrade the client or the daemon"),
            std::string::npos)
      << client.status();
}

TEST(ConnectTest, NoDaemonIsAClearError) {
  auto client = Client::Connect("/tmp/persistd-no-such-daemon.sock");
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("not running"), std::string::npos);
}

}  // namespace
}  // namespace persistd
