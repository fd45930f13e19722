#include "server/io/exit_watchdog.h"

#include <unistd.h>

#include <thread>

#include "common/log/log.h"

namespace persistd {

void ExitAfter(std::chrono::seconds grace, const char* name) {
  std::thread([grace, name] {
    std::this_thread::sleep_for(grace);
    log::Warning("%s: requests still running %d s after the signal; exiting "
                 "without them",
                 name, static_cast<long long>(grace.count()));
    ::_exit(0);  // the log writes each line out at once
  }).detach();
}

}  // namespace persistd
