// Moved to common/io/fd_passing.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/io/fd_passing.h"  // IWYU pragma: export
