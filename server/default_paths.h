// Moved to common/default_paths.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/default_paths.h"  // IWYU pragma: export
