// Moved to common/io/atomic_file.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/io/atomic_file.h"  // IWYU pragma: export
