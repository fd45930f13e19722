// Moved to common/io/scoped_fd.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/io/scoped_fd.h"  // IWYU pragma: export
