// Moved to common/io/errno_status.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/io/errno_status.h"  // IWYU pragma: export
