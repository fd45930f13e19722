// Moved to common/io/mapped_region.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/io/mapped_region.h"  // IWYU pragma: export
