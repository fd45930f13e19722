// persistd: the daemon's entry point. It owns process concerns only --
// options, directories, the single-instance lock, signals -- and wires the
// store, the service and the listener together.
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/io/atomic_file.h"
#include "common/io/errno_status.h"
#include "common/io/scoped_fd.h"
#include "common/log/log.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/daemon_options.h"
#include "server/io/exit_watchdog.h"
#include "server/io/unix_socket.h"
#include "server/service/descriptor_inbox.h"
#include "server/service/listener.h"
#include "server/service/peer_table.h"
#include "server/service/persistd_service.h"
#include "server/service/rpc_log.h"
#include "server/store/segment_builder.h"
#include "server/store/segment_cache.h"
#include "server/store/stale_sweeper.h"

namespace persistd {
namespace {

// mkdir -p, creating missing directories with `mode`.
absl::Status MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return absl::OkStatus();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a directory"));
    }
    return absl::OkStatus();
  }
  std::string parent = DirName(path);
  if (parent != path) {
    absl::Status status = MakeDirs(parent, mode);
    if (!status.ok()) return status;
  }
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    return ErrnoStatus("mkdir", path, errno);
  }
  return absl::OkStatus();
}

std::string Absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return absl::StrCat(cwd, "/", path);
}

// Counts the unary calls in flight (everything but Attach streams), so
// shutdown can let them finish and then end the sessions at once: gRPC's
// Shutdown(deadline) waits for every call, and an Attach stream never ends
// by itself, so a SIGTERM used to take the whole 5 s grace period while
// clients and a restarted daemon waited.
class InflightCounter : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    if (info->type() != grpc::experimental::ServerRpcInfo::Type::UNARY) return nullptr;
    return new Counted(&inflight_);
  }
  int inflight() const { return inflight_.load(); }

 private:
  class Counted : public grpc::experimental::Interceptor {
   public:
    explicit Counted(std::atomic<int>* n) : n_(n) { ++*n_; }
    ~Counted() override { --*n_; }
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      methods->Proceed();
    }

   private:
    std::atomic<int>* n_;
  };
  std::atomic<int> inflight_{0};
};

// Until the daemon serves, errors also reach stderr (see log::Options).
int Fail(const absl::Status& status) {
  log::Error("persistd: %s", status.message());
  return 1;
}

int Run(const DaemonOptions& options) {
  const std::string store = Absolute(options.store_dir);
  const std::string socket_path = Absolute(options.socket_path);
  const std::string log_file =
      LogFile(options) == "-" ? "-" : Absolute(LogFile(options));

  // Signals are taken synchronously by sigwait below; every thread created
  // from here on inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A client that disconnects mid-reply must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);

  for (const std::string& dir :
       {store, store + "/segments", DirName(socket_path)}) {
    absl::Status status = MakeDirs(dir, 0700);
    // Anyone who can write where our socket or segments live could swap
    // them for their own: refuse such directories.
    if (status.ok()) status = CheckPrivateDirectory(dir);
    if (!status.ok()) return Fail(status);
  }
  // Staging files of older versions: descriptors replaced them.
  ::rmdir((store + "/staging").c_str());

  // One daemon per store: the staging and segment directories are ours.
  std::string lock_path = store + "/persistd.lock";
  ScopedFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return Fail(ErrnoStatus("open", lock_path, errno));
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return Fail(absl::FailedPreconditionError(absl::StrCat(
        "another persistd already uses the store ", store,
        "; stop it or pass a different --store")));
  }
  // Only the daemon holding the store's lock writes its log.
  {
    log::Options log_options;
    log_options.level = options.log_level;
    log_options.file = log_file;
    absl::Status status = log::Configure(log_options);
    if (!status.ok()) return Fail(status);
  }

  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind(socket_path);
  if (!listener.ok()) return Fail(listener.status());
  absl::StatusOr<std::unique_ptr<DescriptorInbox>> inbox =
      DescriptorInbox::Bind(socket_path + ".fds");
  if (!inbox.ok()) return Fail(inbox.status());

  PickleLimits limits;
  limits.max_pickle_bytes = options.max_pickle_bytes;
  limits.max_index_memory = options.max_pickle_memory;
  SetDefaultBuildLimits(limits);  // before any build can start

  SegmentCache cache(store + "/segments", options.cache_bytes);
  StaleSweeper sweeper(&cache, absl::Seconds(options.sweep_seconds));
  PeerTable peers;
  ServiceInfo info{kPersistdVersion, store, socket_path, options.codec_threads,
                   options.fsync};
  info.peers = &peers;
  info.log_file = log_file;
  info.log_level = log::LevelName(options.log_level);
  PersistdService service(info, inbox->get(), &cache);

  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  // Owned by the builder's list; outlives the server (this stack frame).
  InflightCounter* inflight = new InflightCounter;
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        interceptors;
    interceptors.emplace_back(inflight);
    interceptors.emplace_back(new RpcLog(&peers));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  // Requests carry at most an inline payload (1 MiB) or source (64 KiB)
  // plus per-array extents; bigger ones are hostile. Replies may carry a
  // large index.
  builder.SetMaxReceiveMessageSize(16 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    return Fail(absl::InternalError("could not start the gRPC server"));
  }
  (*inbox)->Start();
  (*listener)->Start(server.get(), &peers);
  log::Info(
      "persistd %s: serving %s (store %s, cache budget %d bytes, %d codec "
      "threads, fsync %s, pickle limits %d bytes / %d bytes of memory, log "
      "level %s, pid %d)",
      kPersistdVersion, socket_path, store, options.cache_bytes,
      options.codec_threads, options.fsync ? "on" : "off",
      options.max_pickle_bytes, options.max_pickle_memory,
      log::LevelName(options.log_level), static_cast<int>(::getpid()));
  log::EndStartup();

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log::Info("%s received, shutting down", strsignal(signal_number));
  // Requests waiting for a build return now; one that cannot end (a source
  // pipe whose writer never closes it) must not keep the daemon alive.
  cache.Shutdown();
  ExitAfter(std::chrono::seconds(10), "persistd");
  (*listener)->Stop();
  // Let dumps and loads in flight finish (up to 5 s), then cancel what is
  // left -- the sessions' Attach streams -- at once.
  const auto drain_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (inflight->inflight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  (*inbox)->Stop();
  server->Shutdown(std::chrono::system_clock::now());
  listener->reset();  // unlinks the socket
  log::Info("stopped");
  return 0;
}

}  // namespace
}  // namespace persistd

int main(int argc, char** argv) {
  // Large buffers (requests, decoder windows, write blocks) come from mmap
  // and go back to the kernel when freed, and threads share a few arenas:
  // glibc's defaults kept gigabytes resident after bursts of big requests.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  mallopt(M_ARENA_MAX, 4);
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<persistd::DaemonOptions> options =
      persistd::ParseDaemonOptions(args);
  if (!options.ok()) {
    fputs(absl::StrCat("persistd: ", options.status().message(), "\n").c_str(), stderr);
    return 2;
  }
  if (options->help) {
    fputs(persistd::DaemonUsage().c_str(), stdout);
    return 0;
  }
  if (options->version) {
    printf("persistd %s\n", persistd::kPersistdVersion);
    return 0;
  }
  return persistd::Run(*options);
}
