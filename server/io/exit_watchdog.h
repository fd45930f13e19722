// ExitAfter ends the process after a grace period unless it has ended by
// itself, for shutdowns that may wait on something that never finishes: a
// gRPC server's Shutdown waits for every running handler, and a handler
// reading a pipe whose writer keeps it open never returns.
#ifndef PERSISTD_SERVER_IO_EXIT_WATCHDOG_H_
#define PERSISTD_SERVER_IO_EXIT_WATCHDOG_H_

#include <chrono>

namespace persistd {

// Starts a detached thread that, `grace` from now, logs "<name>: <what is
// still running> ... exiting without it" to stderr and calls _exit(0)
// (no destructors, no atexit handlers: they could wait on the same thing).
// A process that exits first simply takes the thread with it.
void ExitAfter(std::chrono::seconds grace, const char* name);

}  // namespace persistd

#endif  // PERSISTD_SERVER_IO_EXIT_WATCHDOG_H_
