// Moved to common/pickle/pickle_opcodes.h (common/ is shared by the daemon and the clients);
// forwarding until in-flight work lands. New code includes the new path.
#include "common/pickle/pickle_opcodes.h"  // IWYU pragma: export
