// The C++ client against a real persistd (started on a temporary socket),
// and against Python: files joblib and persistd.dump wrote are read here
// with identical bytes for every numeric dtype, Fortran order, 0-d and
// empty arrays; files written here are read by persistd.load and by real
// joblib.load (cross_language.py); malformed files give errors, never
// crashes; several threads load through one Client at once.
//
// The Python side runs $PERSISTD_TEST_PYTHON, a python with persistd and
// joblib installed (deploy/test.sh passes the repository's venv). Without
// it the cross-language tests are skipped, with a message saying so.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <complex>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cpp/connection.h"
#include "client/cpp/pickle_emitter.h"
#include "client/cpp/test_util.h"
#include "gtest/gtest.h"
#include "persistd/client.h"

extern char** environ;

namespace persistd {
namespace {

using testing_util::Entries;
using testing_util::ModeOf;
using testing_util::ReadFile;
using testing_util::ScopedUmask;
using testing_util::WriteFile;

template <typename T>
absl::string_view BytesOf(const std::vector<T>& v) {
  return absl::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string Runfile(absl::string_view path) {
  const char* root = ::getenv("TEST_SRCDIR");
  return absl::StrCat(root == nullptr ? "." : root, "/persistd/", path);
}

// The manifest cross_language.py and the tests exchange (see there).
struct ManifestEntry {
  std::string file, key, dtype, order, bin;
  std::vector<uint64_t> shape;
};

std::vector<ManifestEntry> ReadManifest(const std::string& path) {
  std::vector<ManifestEntry> entries;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() != 6) {
      ADD_FAILURE() << "bad manifest line: " << line;
      continue;
    }
    ManifestEntry e{f[0], f[1], f[2], f[4], f[5], {}};
    for (absl::string_view d : absl::StrSplit(f[3], ',', absl::SkipEmpty())) {
      uint64_t n = 0;
      EXPECT_TRUE(absl::SimpleAtoi(d, &n)) << line;
      e.shape.push_back(n);
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

std::string ShapeList(const std::vector<uint64_t>& shape) {
  return absl::StrJoin(shape, ",");
}

// Views array `index` as T and checks its elements are `expected`'s bytes.
template <typename T>
void ExpectTypedView(const File& file, size_t index, absl::string_view expected) {
  absl::StatusOr<ArrayView<T>> view = file.View<T>(index);
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_EQ(view->size() * sizeof(T), expected.size());
  EXPECT_EQ(std::memcmp(view->data(), expected.data(), expected.size()), 0)
      << file.arrays()[index].path << " of " << file.path();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(view->data()) % alignof(T), 0u);
}

// Checks array `index` against `expected` through the typed view its dtype
// allows (every dtype with a C++ type), else through its raw bytes.
void ExpectValues(const File& file, size_t index, absl::string_view expected) {
  const std::string& dtype = file.arrays()[index].dtype;
  if (dtype == "|b1") return ExpectTypedView<bool>(file, index, expected);
  if (dtype == "|i1") return ExpectTypedView<int8_t>(file, index, expected);
  if (dtype == "|u1") return ExpectTypedView<uint8_t>(file, index, expected);
  if (dtype == "<i2") return ExpectTypedView<int16_t>(file, index, expected);
  if (dtype == "<u2") return ExpectTypedView<uint16_t>(file, index, expected);
  if (dtype == "<i4") return ExpectTypedView<int32_t>(file, index, expected);
  if (dtype == "<u4") return ExpectTypedView<uint32_t>(file, index, expected);
  if (dtype == "<i8") return ExpectTypedView<int64_t>(file, index, expected);
  if (dtype == "<u8") return ExpectTypedView<uint64_t>(file, index, expected);
  if (dtype == "<f4") return ExpectTypedView<float>(file, index, expected);
  if (dtype == "<f8") return ExpectTypedView<double>(file, index, expected);
  if (dtype == "<c8") return ExpectTypedView<std::complex<float>>(file, index, expected);
  if (dtype == "<c16") return ExpectTypedView<std::complex<double>>(file, index, expected);
  // "<f2", "<f16", ">i4", "<U2": no C++ type; a view of any type refuses.
  EXPECT_EQ(file.View<double>(index).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<absl::string_view> bytes = file.Bytes(index);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, expected) << file.arrays()[index].path << " of " << file.path();
}

class DaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir[] = "/tmp/pdd.XXXXXX";  // short: socket names have 107 bytes
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_ = dir_ + "/s.sock";
    const std::string binary = Runfile("server/persistd");
    const std::string store = dir_ + "/store";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::execl(binary.c_str(), binary.c_str(), "--socket", socket_.c_str(),
              "--store", store.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      if (Client::Connect(socket_).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "persistd did not start from " << binary;
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

  // The python to run cross_language.py with, or "" (the test then skips).
  static std::string Python() {
    const char* python = ::getenv("PERSISTD_TEST_PYTHON");
    return python == nullptr ? "" : python;
  }

  // Runs cross_language.py `command` on test_dir_ with $PERSISTD_SOCKET
  // set to our daemon; its output, or an error that includes it.
  absl::StatusOr<std::string> RunPython(const std::string& command) {
    const std::string script = Runfile("tests/cpp/cross_language.py");
    const std::string log = test_dir_ + "/python.log";
    std::vector<std::string> env = {
        "PERSISTD_SOCKET=" + socket_, "PERSISTD_AUTOSTART=0",
        "PYTHONDONTWRITEBYTECODE=1"};
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "PERSISTD_", 9) != 0) env.push_back(*e);
    }
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string python = Python();
    std::vector<std::string> args = {python, script, command, test_dir_};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t child = ::fork();
    if (child == 0) {
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) ::_exit(126);
      ::execve(python.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    std::string output = ReadFile(log);
    ::unlink(log.c_str());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrCat(python, " ", script, " ", command,
                                              " failed (status ", status, "):\n", output));
    }
    return output;
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

#define SKIP_WITHOUT_PYTHON()                                                  \
  if (Python().empty()) {                                                      \
    GTEST_SKIP() << "PERSISTD_TEST_PYTHON is not set: cross-language checks "  \
                    "need a python with persistd and joblib (bash "            \
                    "deploy/test.sh sets it; or bazel test "                   \
                    "--test_env=PERSISTD_TEST_PYTHON=$PWD/.venv/bin/python)";  \
  }

// -- Python writes, C++ reads -----------------------------------------------------

TEST_F(DaemonTest, PythonFilesReadWithIdenticalValues) {
  SKIP_WITHOUT_PYTHON();
  absl::StatusOr<std::string> written = RunPython("write");
  ASSERT_TRUE(written.ok()) << written.status();
  std::map<std::string, std::vector<ManifestEntry>> files;
  for (ManifestEntry& e : ReadManifest(test_dir_ + "/python_manifest.tsv")) {
    files[e.file].push_back(std::move(e));
  }
  ASSERT_GE(files.size(), 12u);
  size_t checked = 0;
  for (const auto& [name, entries] : files) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::unique_ptr<File>> file = client_->Load(test_dir_ + "/" + name);
    ASSERT_TRUE(file.ok()) << file.status();
    const std::vector<ArrayInfo>& arrays = (*file)->arrays();
    ASSERT_EQ(arrays.size(), entries.size());
    for (size_t i = 0; i < arrays.size(); ++i) {
      const ManifestEntry& want = entries[i];
      SCOPED_TRACE(want.key);
      EXPECT_EQ(arrays[i].path, want.key);
      EXPECT_EQ(arrays[i].dtype, want.dtype);
      EXPECT_EQ(arrays[i].shape, want.shape);
      EXPECT_EQ(arrays[i].order == Order::kFortran ? "F" : "C", want.order);
      if (want.bin == "-") {
        EXPECT_EQ(arrays[i].kind, ArrayInfo::Kind::kObject);
        EXPECT_EQ((*file)->View<double>(i).status().code(),
                  absl::StatusCode::kFailedPrecondition);
        continue;
      }
      ASSERT_EQ(arrays[i].kind, ArrayInfo::Kind::kRaw);
      ExpectValues(**file, i, ReadFile(test_dir_ + "/" + want.bin));
      ++checked;
    }
  }
  EXPECT_GT(checked, 200u);
}

TEST_F(DaemonTest, PathsNamesAndFindInANestedValue) {
  SKIP_WITHOUT_PYTHON();
  ASSERT_TRUE(RunPython("write").ok());
  absl::StatusOr<std::unique_ptr<File>> file = client_->Load(test_dir_ + "/nested.pkl");
  ASSERT_TRUE(file.ok()) << file.status();
  const File& f = **file;
  absl::StatusOr<ArrayView<double>> coef = f.View<double>("coef_");
  ASSERT_TRUE(coef.ok()) << coef.status();
  EXPECT_EQ(std::vector<double>(coef->begin(), coef->end()),
            (std::vector<double>{0, 1, 2, 3}));
  EXPECT_TRUE(f.View<double>("[\"model\"].coef_").ok());
  absl::StatusOr<ArrayView<uint8_t>> b = f.View<uint8_t>("[\"trees\"][1][\"value\"]");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->size(), 5u);
  // Two arrays are named "value": the error lists their paths.
  absl::StatusOr<size_t> ambiguous = f.Find("value");
  EXPECT_EQ(ambiguous.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ambiguous.status().message().find(
                "[\"trees\"][0][\"value\"], [\"trees\"][1][\"value\"]"),
            std::string::npos)
      << ambiguous.status();
  absl::StatusOr<size_t> missing = f.Find("weights");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("its arrays are [\"trees\"][0][\"value\"]"),
            std::string::npos)
      << missing.status();
  absl::StatusOr<ArrayView<float>> wrong = f.View<float>("coef_");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("has dtype '<f8', not '<f4': view it as double"),
            std::string::npos)
      << wrong.status();
  // The value itself: path "".
  absl::StatusOr<std::unique_ptr<File>> root = client_->Load(test_dir_ + "/root.pkl");
  ASSERT_TRUE(root.ok()) << root.status();
  ASSERT_EQ((*root)->arrays().size(), 1u);
  EXPECT_EQ((*root)->arrays()[0].path, "");
  EXPECT_TRUE((*root)->View<float>("").ok());
}

// -- C++ writes, Python and joblib read ------------------------------------------

// The arrays one C++ dump holds, and what the manifest says of them.
struct CppArrays {
  std::vector<NamedArray> arrays;
  std::vector<std::string> orders;  // as numpy will see them
  // Storage the ArrayRefs point into.
  std::vector<std::vector<char>> storage;

  template <typename T>
  void Add(const std::string& name, std::vector<T> values, std::vector<uint64_t> shape,
           Order order = Order::kC, const char* seen_as = "C") {
    storage.emplace_back(reinterpret_cast<const char*>(values.data()),
                         reinterpret_cast<const char*>(values.data() + values.size()));
    arrays.push_back(
        {name, ArrayRef(reinterpret_cast<const T*>(storage.back().data()), shape, order)});
    orders.push_back(seen_as);
  }
  void AddRaw(const std::string& name, const std::string& dtype, std::string bytes,
              std::vector<uint64_t> shape) {
    storage.emplace_back(bytes.begin(), bytes.end());
    arrays.push_back({name, ArrayRef::Raw(dtype, shape,
                                          absl::string_view(storage.back().data(),
                                                            storage.back().size()))});
    orders.push_back("C");
  }
};

CppArrays EveryDtype() {
  CppArrays a;
  a.storage.reserve(64);  // ArrayRefs point into it: it must not move
  // A bool[], not std::vector<bool> (which packs bits).
  std::vector<uint8_t> bools = {1, 0, 1};
  a.storage.emplace_back(bools.begin(), bools.end());
  a.arrays.push_back({"bool", ArrayRef(reinterpret_cast<const bool*>(a.storage.back().data()),
                                       {3})});
  a.orders.push_back("C");
  a.Add<int8_t>("int8", {-128, 0, 127}, {3});
  a.Add<uint8_t>("uint8", {0, 1, 255}, {3});
  a.Add<int16_t>("int16", {-32768, 0, 32767}, {3});
  a.Add<uint16_t>("uint16", {0, 65535}, {2});
  a.Add<int32_t>("int32", {INT32_MIN, 0, INT32_MAX}, {3});
  a.Add<uint32_t>("uint32", {0, UINT32_MAX}, {2});
  a.Add<int64_t>("int64", {INT64_MIN, 0, INT64_MAX}, {3});
  a.Add<uint64_t>("uint64", {0, UINT64_MAX}, {2});
  a.Add<float>("float32", {0.0f, -0.0f, 1.5f, INFINITY, -INFINITY, NAN, 1e-40f}, {7});
  a.Add<double>("float64", {0.0, -0.0, 1e308, INFINITY, NAN, 4.9e-324}, {6});
  a.Add<std::complex<float>>("complex64", {{1, 2}, {NAN, INFINITY}}, {2});
  a.Add<std::complex<double>>("complex128", {{1, 2}, {-0.0, 3}}, {2});
  // Dtypes without a C++ type, as raw bytes: float16 1.0, -2.0, inf.
  a.AddRaw("float16", "<f2", std::string("\x00\x3c\x00\xc0\x00\x7c", 6), {3});
  a.AddRaw("big_endian_i4", ">i4", std::string("\x00\x00\x00\x01\xff\xff\xff\xfe", 8), {2});
  std::vector<double> f3(24);
  for (size_t i = 0; i < f3.size(); ++i) f3[i] = i / 7.0;
  a.Add<double>("fortran_3d", f3, {2, 3, 4}, Order::kFortran, "F");
  a.Add<int32_t>("fortran_2d", {0, 3, 1, 4, 2, 5}, {2, 3}, Order::kFortran, "F");
  // One long dimension: numpy calls it C- and F-contiguous, joblib says 'C'.
  a.Add<int32_t>("fortran_row", {1, 2, 3, 4, 5}, {1, 5}, Order::kFortran, "C");
  a.Add<double>("zero_d_f8", {3.25}, {});
  a.Add<int16_t>("zero_d_i2", {-7}, {});
  a.Add<double>("empty_f8", {}, {0});
  a.Add<int32_t>("empty_2d_i4", {}, {3, 0});
  std::vector<float> big(600000);
  std::mt19937 random(3);
  for (float& x : big) x = static_cast<float>(random()) / 1e9f;
  a.Add<float>("big_f4", big, {600000});
  return a;
}

TEST_F(DaemonTest, CppFilesReadByPersistdAndJoblib) {
  SKIP_WITHOUT_PYTHON();
  const CppArrays a = EveryDtype();
  const std::vector<std::pair<std::string, Compression>> specs = {
      {"none", Compression()},   {"zlib", "zlib"},        {"zlib3", {"zlib", 3}},
      {"gzip1", {"gzip", 1}},    {"bz2", "bz2"},          {"lzma", "lzma"},
      {"xz", "xz"},              {"lz4", "lz4"},          {"zstd5", {"zstd", 5}},
  };
  std::vector<std::string> manifest;
  for (size_t i = 0; i < a.arrays.size(); ++i) {
    WriteFile(absl::StrCat(test_dir_, "/", a.arrays[i].name, ".bin"),
              a.arrays[i].array.bytes());
  }
  for (const auto& [tag, spec] : specs) {
    const std::string name = absl::StrCat("cpp_", tag, ".pkl");
    absl::Status dumped = client_->Dump(test_dir_ + "/" + name, a.arrays, spec);
    ASSERT_TRUE(dumped.ok()) << tag << ": " << dumped;
    for (size_t i = 0; i < a.arrays.size(); ++i) {
      const ArrayRef& r = a.arrays[i].array;
      manifest.push_back(absl::StrJoin({name, a.arrays[i].name, r.dtype(),
                                        ShapeList(r.shape()), a.orders[i],
                                        a.arrays[i].name + ".bin"},
                                       "\t"));
    }
    // And C++ reads its own file back.
    absl::StatusOr<std::unique_ptr<File>> file = client_->Load(test_dir_ + "/" + name);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ((*file)->arrays().size(), a.arrays.size());
    for (size_t i = 0; i < a.arrays.size(); ++i) {
      EXPECT_EQ((*file)->arrays()[i].path, absl::StrCat("[\"", a.arrays[i].name, "\"]"));
      ExpectValues(**file, i, a.arrays[i].array.bytes());
    }
  }
  // A loaded view dumped again, as is.
  {
    absl::StatusOr<std::unique_ptr<File>> file = client_->Load(test_dir_ + "/cpp_xz.pkl");
    ASSERT_TRUE(file.ok());
    absl::StatusOr<ArrayView<double>> f3 = (*file)->View<double>("fortran_3d");
    ASSERT_TRUE(f3.ok()) << f3.status();
    ASSERT_TRUE(client_->Dump(test_dir_ + "/cpp_again.pkl", {{"fortran_3d", *f3}}).ok());
    manifest.push_back("cpp_again.pkl\tfortran_3d\t<f8\t2,3,4\tF\tfortran_3d.bin");
  }
  WriteFile(test_dir_ + "/cpp_manifest.tsv", absl::StrJoin(manifest, "\n") + "\n");
  absl::StatusOr<std::string> checked = RunPython("check");
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_NE(checked->find("checked 10 files"), std::string::npos) << *checked;
}

// -- the library's own behavior ----------------------------------------------------

TEST_F(DaemonTest, DumpThenLoadViewsEveryCodec) {
  // 1.6 MB: compressed dumps pass their payload as a sealed memfd (it is
  // above the inline limit); uncompressed ones write it from this buffer.
  std::vector<double> weights(200000);
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = i * 0.25;
  std::vector<int32_t> labels = {3, 1, 4, 1, 5, 9};
  for (const char* method : {"none", "zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"}) {
    const std::string path = test_dir_ + "/arrays-" + method + ".pkl";
    absl::Status status = client_->Dump(
        path, {{"weights", ArrayRef(weights.data(), {1000, 200})}, {"labels", labels}},
        method);
    ASSERT_TRUE(status.ok()) << method << ": " << status;
    absl::StatusOr<std::unique_ptr<File>> file = client_->Load(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ((*file)->arrays().size(), 2u);
    absl::StatusOr<ArrayView<double>> w = (*file)->View<double>("weights");
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->shape(), (std::vector<uint64_t>{1000, 200}));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data()) % 64, 0u);
    EXPECT_TRUE(std::equal(w->begin(), w->end(), weights.begin()));
    EXPECT_EQ(w->At({999, 199}), weights.back());
    absl::StatusOr<ArrayView<int32_t>> l = (*file)->View<int32_t>("labels");
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_TRUE(std::equal(l->begin(), l->end(), labels.begin()));
  }
  // Published files only: no temp file stays beside them.
  EXPECT_EQ(Entries(test_dir_).size(), 8u);
}

TEST_F(DaemonTest, ManyThreadsLoadAndDumpThroughOneClient) {
  constexpr int kFiles = 3;
  std::vector<std::vector<double>> values(kFiles);
  for (int f = 0; f < kFiles; ++f) {
    values[f].resize(50000 + f);
    for (size_t i = 0; i < values[f].size(); ++i) values[f][i] = f * 1e6 + i;
    const Compression spec = f == 0 ? Compression() : f == 1 ? Compression("lz4")
                                                             : Compression("zlib", 1);
    ASSERT_TRUE(client_->Dump(absl::StrCat(test_dir_, "/shared", f, ".pkl"),
                              {{"x", values[f]}}, spec)
                    .ok());
  }
  constexpr int kThreads = 8;
  constexpr int kRounds = 20;
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::unique_ptr<File>> kept;  // outlive their threads
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto fail = [&](const std::string& what) {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back(absl::StrCat("thread ", t, ": ", what));
      };
      for (int r = 0; r < kRounds; ++r) {
        const int f = (t + r) % kFiles;
        absl::StatusOr<std::unique_ptr<File>> file =
            client_->Load(absl::StrCat(test_dir_, "/shared", f, ".pkl"));
        if (!file.ok()) return fail(file.status().ToString());
        absl::StatusOr<ArrayView<double>> x = (*file)->View<double>("x");
        if (!x.ok()) return fail(x.status().ToString());
        if (!std::equal(x->begin(), x->end(), values[f].begin(), values[f].end())) {
          return fail(absl::StrCat("wrong values in shared", f));
        }
        if (r % 5 == 0) {  // and dumps, interleaved with the loads
          std::vector<int64_t> mine(1000, t * 100 + r);
          const std::string path = absl::StrCat(test_dir_, "/thread", t, ".pkl");
          absl::Status dumped = client_->Dump(path, {{"mine", mine}}, r % 10 ? "lz4" : "");
          if (!dumped.ok()) return fail(dumped.ToString());
        }
        if (r == kRounds - 1) {
          std::lock_guard<std::mutex> lock(mu);
          kept.push_back(*std::move(file));
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_TRUE(errors.empty()) << absl::StrJoin(errors, "\n");
  // Files outlive the Client that loaded them: their mappings stay.
  client_.reset();
  for (const std::unique_ptr<File>& file : kept) {
    absl::StatusOr<ArrayView<double>> x = file->View<double>("x");
    ASSERT_TRUE(x.ok());
    EXPECT_EQ(std::fmod((*x)[0], 1e6), 0.0);
  }
}

TEST_F(DaemonTest, MalformedFilesGiveErrorsNeverCrashes) {
  // Good files of several codecs, then every kind of damage to them.
  std::vector<double> x(3000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i;
  std::vector<int32_t> y = {1, 2, 3};
  std::vector<std::string> good;
  for (const char* method : {"none", "zlib", "lz4", "xz", "zstd", "bz2"}) {
    const std::string path = absl::StrCat(test_dir_, "/good-", method, ".pkl");
    ASSERT_TRUE(client_->Dump(path, {{"x", x}, {"y", y}}, method).ok());
    good.push_back(ReadFile(path));
  }
  std::vector<std::string> damaged = {
      "", "\x80", std::string("\x80\x04", 2), "not a pickle at all\n", ".",
      std::string("\x78\x9c\x01\x02", 4),  // a zlib header, then nonsense
      std::string("\x28\xb5\x2f\xfd", 4),  // zstd magic alone
  };
  std::mt19937 random(5);
  for (const std::string& file : good) {
    for (size_t n : {size_t{1}, size_t{2}, size_t{10}, file.size() / 3, file.size() / 2,
                     file.size() - 100, file.size() - 1}) {
      damaged.push_back(file.substr(0, n));
    }
    for (int k = 0; k < 40; ++k) {
      std::string bad = file;
      const size_t at = k < 20 ? k : random() % bad.size();  // headers, then anywhere
      bad[at] = static_cast<char>(bad[at] ^ (1 + random() % 255));
      damaged.push_back(bad);
    }
  }
  for (int k = 0; k < 20; ++k) {
    std::string bytes(1 + random() % 4096, '\0');
    for (char& c : bytes) c = static_cast<char>(random());
    damaged.push_back(bytes);
  }
  const std::string path = test_dir_ + "/damaged.pkl";
  int errors = 0;
  for (size_t k = 0; k < damaged.size(); ++k) {
    WriteFile(path, damaged[k]);
    absl::StatusOr<std::unique_ptr<File>> file = client_->Load(path);
    if (!file.ok()) {
      ++errors;
      EXPECT_FALSE(file.status().message().empty()) << "case " << k;
      continue;
    }
    // Whatever loads is readable to its last byte.
    uLong crc = 0;
    for (size_t i = 0; i < (*file)->arrays().size(); ++i) {
      absl::StatusOr<absl::string_view> bytes = (*file)->Bytes(i);
      if (bytes.ok()) {
        crc = crc32_z(crc, reinterpret_cast<const Bytef*>(bytes->data()), bytes->size());
      }
      (void)(*file)->View<double>(i);
      (void)(*file)->View<int32_t>(i);
    }
  }
  EXPECT_GT(errors, static_cast<int>(damaged.size() / 2));
  // The daemon is still there, and still right.
  ASSERT_TRUE(client_->Status().ok());
  absl::StatusOr<std::unique_ptr<File>> again = client_->Load(test_dir_ + "/good-xz.pkl");
  ASSERT_TRUE(again.ok()) << again.status();
  absl::StatusOr<ArrayView<double>> view = (*again)->View<double>("x");
  ASSERT_TRUE(view.ok());
  EXPECT_TRUE(std::equal(view->begin(), view->end(), x.begin()));
}

TEST_F(DaemonTest, SecondLoadIsACacheHit) {
  std::vector<float> x = {1, 2, 3};
  const std::string path = test_dir_ + "/hit.pkl";
  // Uncompressed: the daemon warms its cache only after compressed dumps.
  ASSERT_TRUE(client_->Dump(path, {{"x", x}}).ok());
  auto first = client_->Load(path);
  auto second = client_->Load(path);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE((*first)->cache_hit());
  EXPECT_TRUE((*second)->cache_hit());
  EXPECT_EQ((*first)->generation(), (*second)->generation());
}

TEST_F(DaemonTest, OverwriteIsSeenByTheNextLoad) {
  const std::string path = test_dir_ + "/again.pkl";
  for (int32_t value : {1, 2}) {
    std::vector<int32_t> x(1000, value);
    ASSERT_TRUE(client_->Dump(path, {{"x", x}}).ok());
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
  EXPECT_NE(missing.status().message().find("nope.pkl: No such file"), std::string::npos);
  std::vector<float> x = {1, 2, 3};
  absl::Status bad =
      client_->Dump(test_dir_ + "/bad.pkl", {{"x", ArrayRef::Raw("<f4", {4}, BytesOf(x))}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("needs 16 bytes but 12 were given"), std::string::npos) << bad;
  bad = client_->Dump(test_dir_ + "/bad.pkl",
                      {{"x", ArrayRef::Raw("<f3", {3}, BytesOf(x))}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("like '<f8'"), std::string::npos) << bad;
  bad = client_->Dump(test_dir_ + "/bad.pkl", {{"x", x}, {"x", x}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  bad = client_->Dump(test_dir_ + "/bad.pkl", {{"x", x}}, "snappy");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("unknown compression method \"snappy\""), std::string::npos);
  bad = client_->Dump(test_dir_ + "/bad.pkl", {{"x", x}}, {"zlib", 11});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  absl::Status no_dir = client_->Dump(test_dir_ + "/no/such/dir.pkl", {{"x", x}});
  EXPECT_EQ(no_dir.code(), absl::StatusCode::kNotFound) << no_dir;
  absl::Status to_dir = client_->Dump(test_dir_, {{"x", x}});
  EXPECT_EQ(to_dir.code(), absl::StatusCode::kInvalidArgument) << to_dir;
  EXPECT_TRUE(Entries(test_dir_).empty());  // nothing written
  absl::StatusOr<DaemonStatus> status = client_->Status();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->protocol, static_cast<uint32_t>(v1::PROTOCOL_CURRENT));
  EXPECT_EQ(status->socket_path, socket_);
  EXPECT_GT(status->pid, 0);
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
  const std::string path = test_dir_ + "/private.pkl";
  {
    ScopedUmask mask(077);
    ASSERT_TRUE(client_->Dump(path, {{"x", x}}).ok());
    EXPECT_EQ(ModeOf(path), 0600u);
    // An overwrite keeps the file's mode, whatever the umask.
    ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
    ASSERT_TRUE(client_->Dump(path, {{"x", x}}, "zlib").ok());
    EXPECT_EQ(ModeOf(path), 0640u);
    ASSERT_TRUE(client_->Dump(path, {{"x", x}}).ok());
    EXPECT_EQ(ModeOf(path), 0640u);
  }
  {
    ScopedUmask mask(022);
    const std::string shared = test_dir_ + "/shared.pkl";
    ASSERT_TRUE(client_->Dump(shared, {{"x", x}}).ok());
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
  for (const char* method : {"none", "xz"}) {
    ASSERT_TRUE(client_->Dump(link, {{"x", x}}, method).ok());
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
  // refuses the request after the client created its temp file. Only the
  // protocol layer can send such a request; the public API refuses first.
  absl::StatusOr<std::shared_ptr<internal::Connection>> connection =
      internal::Connection::Open(socket_);
  ASSERT_TRUE(connection.ok()) << connection.status();
  std::vector<double> half(150000, 1.0);
  PickleEmitter skeleton;
  skeleton.PersistentId(0);
  const std::string pickle = skeleton.Finish();
  for (v1::Codec codec : {v1::CODEC_NONE, v1::CODEC_ZSTD}) {
    absl::Status status = (*connection)->DumpPickle(
        path, pickle, {{WrapperStatePickle("<f8", {300000}), BytesOf(half)}}, codec, -1);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(ReadFile(path), "old contents");
    EXPECT_EQ(Entries(test_dir_), std::vector<std::string>{"kept.pkl"});
  }
}

}  // namespace
}  // namespace persistd
