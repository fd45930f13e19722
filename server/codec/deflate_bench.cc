// Measures the deflate libraries persistd can use for zlib/gzip streams
// (zlib, ISA-L igzip, libdeflate) and persistd's own zlib codec, on files
// given on the command line:
//
//   bazel run //server/codec:deflate_bench -- [--repeat N] FILE...
//   bazel run //server/codec:deflate_bench -- --sizes FILE...
//
// For each file it prints, per library and level, the compressed size (and
// its ratio to zlib level 3's, joblib's default), compression and
// decompression speed in MB/s of uncompressed data (1 MB = 10^6 bytes), on
// one thread unless the row says otherwise. Speeds are given twice: by wall
// time, and by the process's CPU time, which other load on the machine
// hardly changes (for one thread it is the wall speed of an idle machine;
// for two, the work per core). Every output is checked by decompressing it
// again, with the library and with zlib (what Python uses), so a broken
// configuration cannot look fast.
//
// The numbers decide which library NewEncoder uses for which level; see
// zlib_codec.cc.
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/codec/codec.h"
#include "server/io/byte_sink.h"

namespace persistd {
namespace {

constexpr size_t kChunk = size_t{1} << 20;

struct Seconds {
  double wall = 1e300;
  double cpu = 1e300;
};

double CpuNow() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// Best wall and CPU time of `repeat` runs of `fn`, in seconds. The best,
// not the mean: on a shared 2-core machine other processes only ever slow
// a run.
Seconds Best(int repeat, const std::function<void()>& fn) {
  Seconds best;
  for (int i = 0; i < repeat; ++i) {
    auto start = std::chrono::steady_clock::now();
    double cpu_start = CpuNow();
    fn();
    double cpu = CpuNow() - cpu_start;
    std::chrono::duration<double> took =
        std::chrono::steady_clock::now() - start;
    best.wall = std::min(best.wall, took.count());
    best.cpu = std::min(best.cpu, cpu);
  }
  return best;
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "deflate_bench: %s\n", message.c_str());
  std::exit(1);
}

// ------------------------------------------------------------------ zlib

std::string ZlibCompress(const std::string& in, int level) {
  z_stream s{};
  if (deflateInit2(&s, level, Z_DEFLATED, 15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    Die("deflateInit2");
  }
  std::string out(deflateBound(&s, in.size()), '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = reinterpret_cast<Bytef*>(&out[0]);
  s.avail_out = static_cast<uInt>(out.size());
  if (deflate(&s, Z_FINISH) != Z_STREAM_END) Die("deflate");
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// Streams the output through a 1 MiB buffer, as a decoder does.
size_t ZlibDecompress(const std::string& in, std::string* check) {
  z_stream s{};
  // 15 + 32: zlib or gzip wrapper, detected from the header.
  if (inflateInit2(&s, 15 + 32) != Z_OK) Die("inflateInit2");
  std::vector<char> buffer(kChunk);
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  s.avail_in = static_cast<uInt>(in.size());
  size_t total = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    s.next_out = reinterpret_cast<Bytef*>(buffer.data());
    s.avail_out = static_cast<uInt>(buffer.size());
    rc = inflate(&s, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) Die("inflate");
    size_t n = buffer.size() - s.avail_out;
    if (check != nullptr) check->append(buffer.data(), n);
    total += n;
  }
  inflateEnd(&s);
  return total;
}

// ----------------------------------------------------------------- ISA-L

size_t IsalLevelBufSize(int level) {
  switch (level) {
    case 1:
      return ISAL_DEF_LVL1_DEFAULT;
    case 2:
      return ISAL_DEF_LVL2_DEFAULT;
    case 3:
      return ISAL_DEF_LVL3_DEFAULT;
  }
  return 0;
}

std::string IsalCompress(const std::string& in, int level) {
  auto s = std::make_unique<isal_zstream>();
  isal_deflate_init(s.get());
  std::vector<uint8_t> level_buf(IsalLevelBufSize(level));
  s->level = level;
  s->level_buf = level_buf.empty() ? nullptr : level_buf.data();
  s->level_buf_size = static_cast<uint32_t>(level_buf.size());
  s->gzip_flag = IGZIP_ZLIB;
  s->end_of_stream = 1;
  // Level 0 (static Huffman tables) can expand incompressible data.
  std::string out(2 * in.size() + kChunk, '\0');
  s->next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(in.data()));
  s->avail_in = static_cast<uint32_t>(in.size());
  s->next_out = reinterpret_cast<uint8_t*>(&out[0]);
  s->avail_out = static_cast<uint32_t>(out.size());
  while (s->internal_state.state != ZSTATE_END) {
    int rc = isal_deflate(s.get());
    if (rc != COMP_OK) Die(absl::StrCat("isal_deflate: ", rc));
    if (s->avail_out == 0) Die("isal_deflate: output buffer too small");
  }
  out.resize(s->total_out);
  return out;
}

size_t IsalDecompress(const std::string& in, std::string* check) {
  auto s = std::make_unique<inflate_state>();
  isal_inflate_init(s.get());
  s->crc_flag = ISAL_ZLIB;
  std::vector<char> buffer(kChunk);
  s->next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(in.data()));
  s->avail_in = static_cast<uint32_t>(in.size());
  size_t total = 0;
  while (s->block_state != ISAL_BLOCK_FINISH) {
    s->next_out = reinterpret_cast<uint8_t*>(buffer.data());
    s->avail_out = static_cast<uint32_t>(buffer.size());
    if (isal_inflate(s.get()) != ISAL_DECOMP_OK) Die("isal_inflate");
    size_t n = buffer.size() - s->avail_out;
    if (n == 0 && s->avail_in == 0 && s->block_state != ISAL_BLOCK_FINISH) {
      Die("isal_inflate: truncated");
    }
    if (check != nullptr) check->append(buffer.data(), n);
    total += n;
  }
  return total;
}

// ------------------------------------------------------------ libdeflate

std::string LibdeflateCompress(const std::string& in, int level) {
  libdeflate_compressor* c = libdeflate_alloc_compressor(level);
  if (c == nullptr) Die("libdeflate_alloc_compressor");
  std::string out(libdeflate_zlib_compress_bound(c, in.size()), '\0');
  size_t n = libdeflate_zlib_compress(c, in.data(), in.size(), &out[0],
                                      out.size());
  libdeflate_free_compressor(c);
  if (n == 0) Die("libdeflate_zlib_compress");
  out.resize(n);
  return out;
}

// Whole-buffer only: libdeflate has no streaming decoder, so it needs the
// output size up front (`size`), which a zlib stream does not record.
size_t LibdeflateDecompress(const std::string& in, size_t size,
                            std::string* check) {
  libdeflate_decompressor* d = libdeflate_alloc_decompressor();
  std::string out(size, '\0');
  size_t n = 0;
  if (libdeflate_zlib_decompress(d, in.data(), in.size(), &out[0], size,
                                 &n) != LIBDEFLATE_SUCCESS) {
    Die("libdeflate_zlib_decompress");
  }
  libdeflate_free_decompressor(d);
  if (check != nullptr) *check = std::move(out);
  return n;
}

// ------------------------------------------------------- persistd codec

std::string CodecCompress(const std::string& in, Codec codec, int level,
                          int threads) {
  StringSink sink;
  absl::StatusOr<std::unique_ptr<ByteSink>> encoder =
      NewEncoder(codec, level, threads, &sink);
  if (!encoder.ok()) Die(std::string(encoder.status().message()));
  // In 1 MiB appends, as the format layer hands over array data.
  for (size_t pos = 0; pos < in.size(); pos += kChunk) {
    absl::Status status =
        (*encoder)->Append(absl::string_view(in).substr(pos, kChunk));
    if (!status.ok()) Die(std::string(status.message()));
  }
  absl::Status status = (*encoder)->Finish();
  if (!status.ok()) Die(std::string(status.message()));
  return sink.data();
}

// Counts what arrives; keeps it only when asked to.
class CountingSink : public ByteSink {
 public:
  explicit CountingSink(std::string* keep) : keep_(keep) {}
  absl::Status Append(absl::string_view data) override {
    bytes_ += data.size();
    if (keep_ != nullptr) keep_->append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Finish() override { return absl::OkStatus(); }
  size_t bytes() const { return bytes_; }

 private:
  std::string* keep_;
  size_t bytes_ = 0;
};

size_t CodecDecompress(const std::string& in, Codec codec,
                       std::string* check) {
  CountingSink sink(check);
  size_t consumed = 0;
  absl::Status status = Decode(codec, in, &sink, &consumed);
  if (!status.ok()) Die(std::string(status.message()));
  if (consumed != in.size()) Die("codec: consumed != size");
  return sink.bytes();
}

// ------------------------------------------------------------------ main

struct Row {
  std::string name;
  std::function<std::string(const std::string&)> compress;
  std::function<size_t(const std::string&, std::string*)> decompress;
};

void RunFile(const std::string& path, int repeat) {
  std::ifstream file(path, std::ios::binary);
  if (!file) Die("cannot read " + path);
  const std::string input((std::istreambuf_iterator<char>(file)),
                          std::istreambuf_iterator<char>());
  const double mb = input.size() / 1e6;
  std::printf("\n%s: %.1f MB\n", path.c_str(), mb);
  std::printf("%-32s %11s %6s %8s %19s %19s\n", "", "", "", "",
              "compress MB/s", "decompress MB/s");
  std::printf("%-32s %11s %6s %8s %9s %9s %9s %9s\n", "library / level",
              "bytes", "ratio", "vs zlib3", "wall", "cpu", "wall", "cpu");

  const size_t zlib3 = ZlibCompress(input, 3).size();
  const size_t size = input.size();
  std::vector<Row> rows;
  for (int level : {1, 3, 6, 9}) {
    rows.push_back({absl::StrCat("zlib ", level),
                    [level](const std::string& in) {
                      return ZlibCompress(in, level);
                    },
                    ZlibDecompress});
  }
  for (int level : {0, 1, 2, 3}) {
    rows.push_back({absl::StrCat("isa-l ", level),
                    [level](const std::string& in) {
                      return IsalCompress(in, level);
                    },
                    IsalDecompress});
  }
  for (int level : {1, 3, 6, 9}) {
    rows.push_back({absl::StrCat("libdeflate ", level),
                    [level](const std::string& in) {
                      return LibdeflateCompress(in, level);
                    },
                    [size](const std::string& in, std::string* check) {
                      return LibdeflateDecompress(in, size, check);
                    }});
  }
  for (Codec codec : {Codec::kZlib, Codec::kGzip}) {
    for (int threads : {1, 2}) {
      for (int level : {1, 3, 6, 9}) {
        rows.push_back(
            {absl::StrCat("persistd ", CodecName(codec), " ", level,
                          threads > 1 ? absl::StrCat(" (", threads, " thr)")
                                      : ""),
             [codec, level, threads](const std::string& in) {
               return CodecCompress(in, codec, level, threads);
             },
             [codec](const std::string& in, std::string* check) {
               return CodecDecompress(in, codec, check);
             }});
      }
    }
  }

  for (const Row& row : rows) {
    std::string compressed;
    Seconds comp = Best(repeat, [&] { compressed = row.compress(input); });
    std::string check;
    row.decompress(compressed, &check);
    if (check != input) Die(row.name + ": round trip differs");
    // What Python's zlib module (zlib's inflate) reads back, too.
    check.clear();
    ZlibDecompress(compressed, &check);
    if (check != input) Die(row.name + ": zlib reads something else");
    Seconds dec = Best(repeat, [&] { row.decompress(compressed, nullptr); });
    std::printf("%-32s %11zu %6.3f %8.3f %9.1f %9.1f %9.1f %9.1f\n",
                row.name.c_str(), compressed.size(),
                static_cast<double>(compressed.size()) / input.size(),
                static_cast<double>(compressed.size()) / zlib3,
                mb / comp.wall, mb / comp.cpu, mb / dec.wall, mb / dec.cpu);
    std::fflush(stdout);
  }
}

// --sizes: only the compressed sizes of zlib and of the codec (one thread)
// at levels 1-3, where the codec mixes in ISA-L, relative to zlib's at the
// same level and at level 3. (Levels 4-9 are zlib's own bytes.)
void SizesOfFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) Die("cannot read " + path);
  const std::string input((std::istreambuf_iterator<char>(file)),
                          std::istreambuf_iterator<char>());
  const double zlib3 = ZlibCompress(input, 3).size();
  std::printf("\n%s: %.1f MB\n%-6s %11s %11s %13s %13s\n", path.c_str(),
              input.size() / 1e6, "level", "zlib", "persistd",
              "vs zlib same", "vs zlib 3");
  for (int level = 1; level <= 3; ++level) {
    const size_t zlib = ZlibCompress(input, level).size();
    const size_t ours = CodecCompress(input, Codec::kZlib, level, 1).size();
    std::printf("%-6d %11zu %11zu %13.3f %13.3f\n", level, zlib, ours,
                static_cast<double>(ours) / zlib, ours / zlib3);
    std::fflush(stdout);
  }
}

}  // namespace
}  // namespace persistd

int main(int argc, char** argv) {
  int repeat = 3;
  bool sizes = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--sizes") == 0) {
      sizes = true;
    } else {
      files.push_back(argv[i]);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr,
                 "usage: deflate_bench [--repeat N | --sizes] FILE...\n");
    return 2;
  }
  for (const std::string& path : files) {
    if (sizes) {
      persistd::SizesOfFile(path);
    } else {
      persistd::RunFile(path, repeat);
    }
  }
  return 0;
}
