// Where persistd lives by default. The daemon and the C++ client share
// this; the Python client mirrors it (client/python/persistd/paths.py).
#ifndef PERSISTD_COMMON_DEFAULT_PATHS_H_
#define PERSISTD_COMMON_DEFAULT_PATHS_H_

#include <string>

namespace persistd {

// $PERSISTD_SOCKET, else $XDG_RUNTIME_DIR/persistd.sock, else
// /tmp/persistd-$UID/persistd.sock.
std::string DefaultSocketPath();

// $PERSISTD_STORE, else $XDG_DATA_HOME/persistd, else
// ~/.local/share/persistd.
std::string DefaultStoreDir();

}  // namespace persistd

#endif  // PERSISTD_COMMON_DEFAULT_PATHS_H_
