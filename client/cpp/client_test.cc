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
#include "client/cpp/array_paths.h"
#include "client/cpp/descriptor_channel.h"
#include "client/cpp/dump_spec.h"
#include "client/cpp/dump_target.h"
#include "client/cpp/pickle_emitter.h"
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

// -- array paths ----------------------------------------------------------------

// Writes skeletons as the daemon hands them out: protocol 4, each array a
// `__persistd__ materialize` call on a NumpyArrayWrapper.
class Skeleton {
 public:
  Skeleton() {
    Op(kProto);
    out_.push_back(4);
  }
  Skeleton& Op(uint8_t code) {
    out_.push_back(static_cast<char>(code));
    return *this;
  }
  Skeleton& Str(absl::string_view s) {
    Op(kShortBinUnicode);
    out_.push_back(static_cast<char>(s.size()));
    out_.append(s.data(), s.size());
    return *this;
  }
  Skeleton& Int(uint8_t v) {
    Op(kBinInt1);
    out_.push_back(static_cast<char>(v));
    return *this;
  }
  Skeleton& Global(absl::string_view module, absl::string_view name) {
    absl::StrAppend(&out_, "c", module, "\n", name, "\n");
    return *this;
  }
  Skeleton& Put(uint8_t index) {
    Op(kBinPut);
    out_.push_back(static_cast<char>(index));
    return *this;
  }
  Skeleton& Get(uint8_t index) {
    Op(kBinGet);
    out_.push_back(static_cast<char>(index));
    return *this;
  }
  // What joblib_reader.h inserts around a wrapper, with a wrapper as joblib
  // pickles it (its state shortened).
  Skeleton& Array() {
    Global("__persistd__", "materialize").Op(kMark);
    Global("joblib.numpy_pickle", "NumpyArrayWrapper").Op(kEmptyTuple).Op(kNewObj);
    Op(kEmptyDict).Op(kMark).Str("order").Str("C").Op(kSetItems).Op(kBuild);
    return Op(kTuple).Op(kReduce);
  }
  std::string Done() {
    Op(kStop);
    return out_;
  }

 private:
  std::string out_;
};

std::vector<std::string> PathsOf(const std::string& skeleton, size_t arrays) {
  absl::StatusOr<std::vector<ArrayPath>> paths = ArrayPaths(skeleton, arrays);
  EXPECT_TRUE(paths.ok()) << paths.status();
  std::vector<std::string> out;
  if (paths.ok()) {
    for (const ArrayPath& p : *paths) out.push_back(p.path);
  }
  return out;
}

TEST(ArrayPathsTest, DictKeysListIndicesAndAttributes) {
  // {"a": A0, "trees": [{"value": A1}, 7, {"value": A2}], 3: A3, (1,): A4}
  Skeleton s;
  s.Op(kEmptyDict).Put(0).Op(kMark);
  s.Str("a").Array();
  s.Str("trees").Op(kEmptyList).Op(kMark);
  s.Op(kEmptyDict).Str("value").Array().Op(kSetItem);
  s.Int(7);
  s.Op(kEmptyDict).Str("value").Array().Op(kSetItem);
  s.Op(kAppends);
  s.Int(3).Array();
  s.Int(1).Op(kTuple1).Array();
  s.Op(kSetItems);
  const std::string pickle = s.Done();
  EXPECT_EQ(PathsOf(pickle, 5),
            (std::vector<std::string>{"[\"a\"]", "[\"trees\"][0][\"value\"]",
                                      "[\"trees\"][2][\"value\"]", "[3]", "[?]"}));
  absl::StatusOr<std::vector<ArrayPath>> paths = ArrayPaths(pickle, 5);
  ASSERT_TRUE(paths.ok());
  EXPECT_EQ((*paths)[0].name, "a");
  EXPECT_EQ((*paths)[1].name, "value");
  EXPECT_EQ((*paths)[3].name, "");
}

TEST(ArrayPathsTest, ObjectsAttributesArgumentsAndState) {
  // [Model(coef_=A0, intercept_=A1), OrderedDict([("w", A2)]), Thing(A3),
  //  Custom.__setstate__((A4,))]
  Skeleton s;
  s.Op(kEmptyList).Op(kMark);
  s.Global("sklearn.linear_model", "Ridge").Op(kEmptyTuple).Op(kNewObj);
  s.Op(kEmptyDict).Op(kMark).Str("coef_").Array().Str("alpha").Int(1);
  s.Str("intercept_").Array().Op(kSetItems).Op(kBuild);
  s.Global("collections", "OrderedDict").Op(kEmptyTuple).Op(kReduce);
  s.Op(kMark).Str("w").Array().Op(kSetItems);
  s.Global("pkg", "Thing").Array().Op(kTuple1).Op(kReduce);
  s.Global("pkg", "Custom").Op(kEmptyTuple).Op(kNewObj).Array().Op(kTuple1).Op(kBuild);
  s.Op(kAppends);
  EXPECT_EQ(PathsOf(s.Done(), 5),
            (std::vector<std::string>{"[0].coef_", "[0].intercept_", "[1][\"w\"]",
                                      "[2].__args__[0]", "[3].__state__[0]"}));
}

TEST(ArrayPathsTest, TheValueItselfAndUnknownPlaces) {
  EXPECT_EQ(PathsOf(Skeleton().Array().Done(), 1), std::vector<std::string>{""});
  // An array popped off the stack is nowhere; one more array than calls
  // is unknown too.
  Skeleton s;
  s.Array().Op(kPop).Op(kEmptyDict).Str("x").Array().Op(kSetItem);
  EXPECT_EQ(PathsOf(s.Done(), 3), (std::vector<std::string>{"?", "[\"x\"]", "?"}));
}

TEST(ArrayPathsTest, SharedAndRecursiveReferencesTakeTheFirstPath) {
  // a = [A0]; {"first": a, "again": a, "self": a} with a.append(a)
  Skeleton s;
  s.Op(kEmptyDict).Op(kMark);
  s.Str("first").Op(kEmptyList).Put(1).Array().Op(kAppend);
  s.Str("again").Get(1);
  s.Op(kSetItems);
  s.Get(1).Get(1).Op(kAppend).Op(kPop);
  EXPECT_EQ(PathsOf(s.Done(), 1), std::vector<std::string>{"[\"first\"][0]"});
}

TEST(ArrayPathsTest, KeysAreEscaped) {
  Skeleton s;
  s.Op(kEmptyDict).Str("say \"hi\"\\\n").Array().Op(kSetItem);
  EXPECT_EQ(PathsOf(s.Done(), 1),
            std::vector<std::string>{"[\"say \\\"hi\\\"\\\\\\u000a\"]"});
}

TEST(ArrayPathsTest, DeepNestingNeitherRecursesNorGrowsPathsWithoutBound) {
  // 100000 nested lists around one array: no recursion in the walk or the
  // search, and a path longer than the limit reads "?".
  Skeleton s;
  for (int i = 0; i < 100000; ++i) s.Op(kEmptyList);
  s.Array();
  for (int i = 0; i < 100000; ++i) s.Op(kAppend);
  EXPECT_EQ(PathsOf(s.Done(), 1), std::vector<std::string>{"?"});
}

TEST(ArrayPathsTest, LimitsEndTheWalk) {
  // One array referenced a million times through the memo.
  Skeleton s;
  s.Array().Put(0).Op(kPop).Op(kEmptyList).Op(kMark);
  for (int i = 0; i < 1000000; ++i) s.Get(0);
  s.Op(kAppends);
  ArrayPathLimits limits;
  limits.max_objects = 1000;
  absl::StatusOr<std::vector<ArrayPath>> paths = ArrayPaths(s.Done(), 1, limits);
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kResourceExhausted) << paths.status();
}

TEST(ArrayPathsTest, HostileSkeletonsGiveErrorsNeverCrashes) {
  Skeleton s;
  s.Op(kEmptyDict).Put(0).Op(kMark).Str("a").Array().Str("b");
  s.Op(kEmptyList).Op(kMark).Array().Array().Op(kAppends).Op(kSetItems);
  const std::string good = s.Done();
  ASSERT_EQ(PathsOf(good, 3).size(), 3u);
  // Every prefix, and every single-byte change at every position.
  for (size_t n = 0; n < good.size(); ++n) {
    (void)ArrayPaths(good.substr(0, n), 3);
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (int byte = 0; byte < 256; byte += 7) {
      std::string bad = good;
      bad[i] = static_cast<char>(byte);
      (void)ArrayPaths(bad, 3);
    }
  }
  // Underflows and unbalanced marks are errors.
  for (uint8_t op : {kAppend, kSetItem, kBuild, kReduce, kPop, kSetItems, kDict,
                     kTuple2, kBinPersId, kStackGlobal, kNewObjEx, kPopMark}) {
    std::string bad = std::string("\x80\x04", 2) + static_cast<char>(op) + ".";
    absl::StatusOr<std::vector<ArrayPath>> paths = ArrayPaths(bad, 0);
    EXPECT_EQ(paths.status().code(), absl::StatusCode::kDataLoss)
        << "opcode " << static_cast<int>(op) << ": " << paths.status();
  }
  // Random bytes.
  std::mt19937 random(1);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes(random() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(random());
    (void)ArrayPaths(bytes, 2);
  }
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
