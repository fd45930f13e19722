// The C++ client's parts that need no daemon: array paths read from
// skeletons (and hostile ones), the pickles it writes, the compression and
// dtype specs, dump targets, views, and refusals of impostor daemons. The
// round trips through a real daemon are in tests/cpp.
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
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/descriptor_channel.h"
#include "client/cpp/dump_spec.h"
#include "client/cpp/dump_target.h"
#include "client/cpp/pickle_emitter.h"
#include "client/cpp/test_util.h"
#include "common/pickle/pickle_opcodes.h"
#include "common/pickle/pickle_scanner.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "persistd/client.h"
#include "proto/persistd.grpc.pb.h"

namespace persistd {
namespace {

using namespace pickle_op;  // NOLINT: opcode names read best unqualified.
using testing_util::Entries;
using testing_util::ModeOf;
using testing_util::ReadFile;
using testing_util::ScopedUmask;
using testing_util::WriteFile;

// A fresh directory under /tmp (short: Unix socket names are limited to
// 107 bytes).
std::string MakeTempDir() {
  char dir[] = "/tmp/pdc.XXXXXX";
  if (::mkdtemp(dir) == nullptr) return "";
  return dir;
}

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

// -- what the client writes -----------------------------------------------------

TEST(PickleEmitterTest, WrapperStateIsAWellFormedPickleWithTheOrder) {
  for (char order : {'C', 'F'}) {
    const std::string state = WrapperStatePickle("<f8", {2, 3}, order);
    PickleScanner scanner(state);
    PickleOp op;
    std::vector<std::string> strings;
    do {
      ASSERT_TRUE(scanner.Next(&op).ok());
      if (op.code == kShortBinUnicode) strings.emplace_back(op.arg);
    } while (op.code != kStop);
    EXPECT_TRUE(scanner.AtEnd());
    auto at = std::find(strings.begin(), strings.end(), "order");
    ASSERT_NE(at, strings.end());
    EXPECT_EQ(*(at + 1), std::string(1, order));
  }
}

TEST(DumpSpecTest, CompressionSpecsAsPythonTakesThem) {
  struct Case {
    Compression spec;
    v1::Codec codec;
    int level;
  };
  const std::vector<Case> cases = {
      {Compression(), v1::CODEC_NONE, -1},
      {"none", v1::CODEC_NONE, -1},
      {"lz4", v1::CODEC_LZ4, -1},
      {{"zlib", 3}, v1::CODEC_ZLIB, 3},
      {{"zlib", 0}, v1::CODEC_NONE, -1},  // joblib: level 0 is no compression
      {{"zstd", 9}, v1::CODEC_ZSTD, 9},
      {std::string("xz"), v1::CODEC_XZ, -1},
  };
  for (const Case& c : cases) {
    absl::StatusOr<CodecChoice> choice = ParseCompression(c.spec.method, c.spec.level);
    ASSERT_TRUE(choice.ok()) << c.spec.method << ": " << choice.status();
    EXPECT_EQ(choice->codec, c.codec) << c.spec.method;
    EXPECT_EQ(choice->level, c.level) << c.spec.method;
  }
  absl::StatusOr<CodecChoice> bad = ParseCompression("lz5", -1);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("use one of \"zlib\""), std::string::npos);
  EXPECT_EQ(ParseCompression("zlib", 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCompression("zlib", -2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DumpSpecTest, NumericDtypesOnly) {
  for (const char* dtype : {"|b1", "|i1", "|u1", "<i2", ">u2", "<i4", "<u8", "<f2",
                            "<f4", ">f8", "<f16", "<c8", "<c16", "<c32"}) {
    EXPECT_TRUE(NumericItemSize(dtype).ok()) << dtype;
  }
  for (const char* dtype : {"", "f8", "<f3", "<i1", "|f8", "=f8", "<U4", "|S8",
                            "|O", "<M8", "<i8x", "|b2"}) {
    EXPECT_EQ(NumericItemSize(dtype).status().code(),
              absl::StatusCode::kInvalidArgument)
        << dtype;
  }
  EXPECT_EQ(*NumericItemSize("<c16"), 16u);
  EXPECT_EQ(*ByteSize({}, 8), 8u);  // 0-d
  EXPECT_EQ(*ByteSize({3, 0, 5}, 8), 0u);
  EXPECT_EQ(ByteSize({1ull << 40, 1ull << 30}, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ArrayViewTest, MultiIndexInEitherOrder) {
  // The 2x3 matrix [[0, 1, 2], [3, 4, 5]] in both layouts.
  const int32_t c[] = {0, 1, 2, 3, 4, 5};
  const int32_t f[] = {0, 3, 1, 4, 2, 5};
  ArrayView<int32_t> in_c(c, {2, 3}, Order::kC);
  ArrayView<int32_t> in_f(f, {2, 3}, Order::kFortran);
  for (uint64_t i = 0; i < 2; ++i) {
    for (uint64_t j = 0; j < 3; ++j) {
      EXPECT_EQ(in_c.At({i, j}), static_cast<int32_t>(3 * i + j));
      EXPECT_EQ(in_f.At({i, j}), static_cast<int32_t>(3 * i + j));
    }
  }
  EXPECT_EQ(in_c.size(), 6u);
  EXPECT_EQ(ArrayView<double>(nullptr, {}, Order::kC).size(), 1u);  // 0-d
  EXPECT_TRUE(ArrayView<double>(nullptr, {4, 0}, Order::kC).empty());
}

TEST(ArrayRefTest, DescribesTheCallersMemory) {
  std::vector<int64_t> v = {1, 2, 3};
  ArrayRef from_vector(v);
  EXPECT_EQ(from_vector.dtype(), "<i8");
  EXPECT_EQ(from_vector.shape(), std::vector<uint64_t>{3});
  EXPECT_EQ(from_vector.bytes().data(), reinterpret_cast<const char*>(v.data()));
  EXPECT_EQ(from_vector.bytes().size(), 24u);
  const double x = 2.5;
  ArrayRef scalar(&x, {});
  EXPECT_EQ(scalar.bytes().size(), 8u);
  EXPECT_EQ(std::string(kNumpyDtype<long long>), "<i8");
  EXPECT_EQ(std::string(kNumpyDtype<std::complex<double>>), "<c16");
}

// -- dump targets -----------------------------------------------------------------

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

// -- connecting -----------------------------------------------------------------

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
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(client.status().message().find("persistd is not running at "
                                           "/tmp/persistd-no-such-daemon.sock"),
            std::string::npos)
      << client.status();
  EXPECT_NE(client.status().message().find("start it with"), std::string::npos);
}

}  // namespace
}  // namespace persistd
