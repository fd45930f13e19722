"""persistd: joblib's ``dump``/``load``, served by a local daemon.

``from persistd import dump, load`` is a drop-in for joblib's functions: the
files are joblib's format (joblib reads ours, we read joblib's, back to
0.8). The daemon does the compression and keeps decompressed files in shared
segments, so N processes loading the same file share one copy, and
``mmap_mode='r'`` maps arrays of compressed files too.

Module map: ``client`` (``Client``, and the module-level ``dump``/``load``
on a default client), ``api`` (arguments, joblib's checks), ``compression`` (the
``compress`` argument), ``pickling`` (dump side), ``unpickling`` (load side),
``transport`` (daemon connection, sessions, leases), ``autostart``
(starting a daemon when none answers), ``binary`` (which daemon to run),
``errors`` (gRPC status to exceptions), ``paths`` (socket, store and
environment), ``admin``/``verify``/``cli`` (persistctl), ``memory``
(joblib.Memory backend).
"""

import os as _os
import sys as _sys


def _enable_grpc_fork_support() -> None:
    """gRPC Python only survives fork-after-use (gunicorn, multiprocessing)
    with its fork handlers on: a child of a parent that used the client
    otherwise hangs or crashes in its first RPC (see transport.py). gRPC
    reads GRPC_ENABLE_FORK_SUPPORT when grpc is imported, so set it unless
    the user chose; if grpc was imported first, flip the flag gRPC keeps
    (it is consulted when channels are created, so this works as long as
    the user has not disabled it explicitly)."""
    if _os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "1").lower() not in ("1", "true", "yes"):
        return
    if "grpc" in _sys.modules:
        try:
            from grpc._cython import cygrpc

            if not cygrpc.is_fork_support_enabled():
                cygrpc._GRPC_ENABLE_FORK_SUPPORT = True
        except Exception:  # a private detail of grpcio; transport.py warns
            pass


_enable_grpc_fork_support()

from persistd.client import Client, dump, load  # noqa: E402
from persistd import _joblib_hook  # noqa: E402

# joblib.Memory(location, backend="persistd"): registered once joblib.memory
# is imported (now, or later through a one-shot import hook): persistd.memory.
_joblib_hook.install()

from persistd._version import __version__  # noqa: E402

__all__ = ["Client", "__version__", "dump", "load"]
