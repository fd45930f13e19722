#include "server/io/exit_watchdog.h"

#include <stdio.h>
#include <unistd.h>

#include <thread>

namespace persistd {

void ExitAfter(std::chrono::seconds grace, const char* name) {
  std::thread([grace, name] {
    std::this_thread::sleep_for(grace);
    fprintf(stderr,
            "%s: requests still running %lld s after the signal; exiting "
            "without them\n",
            name, static_cast<long long>(grace.count()));
    fflush(stderr);
    ::_exit(0);
  }).detach();
}

}  // namespace persistd
