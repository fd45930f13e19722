"""``joblib.Memory`` on persistd: ``Memory(location, backend="persistd")``.

joblib's Memory caches a function's results as joblib files, one
``output.pkl`` per call, and loads them back on a cache hit. This backend
keeps joblib's directory layout, metadata and cache management (it *is*
joblib's ``FileSystemStoreBackend``) and changes only how results are
written and read: through ``persistd.dump`` and ``persistd.load``. So

- a cache hit is served by the daemon's shared segment: N workers that hit
  the same cached result share one copy of its arrays, and a warm hit is one
  RPC and an ``mmap``;
- ``mmap_mode='r'`` works with ``compress`` too (joblib warns and ignores
  it): arrays are read-only maps of the daemon's decompressed segment;
- results are written atomically (joblib writes a temporary file and
  renames it; persistd does the same in one step).

The files are joblib's format: a cache written here can be read by plain
joblib (except ``compress='zstd'``).

Registered with ``joblib.memory.register_store_backend`` when this module
is imported, which ``import persistd`` arranges as soon as joblib is
imported too (``persistd._joblib_hook``), so no extra import is needed.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from joblib._store_backends import CacheWarning, FileSystemStoreBackend
from joblib.logger import format_time
from joblib.memory import register_store_backend

import persistd

#: The name to pass as ``joblib.Memory(..., backend=BACKEND_NAME)``.
BACKEND_NAME = "persistd"


class PersistdStoreBackend(FileSystemStoreBackend):  # type: ignore[misc]
    """joblib's file-system store, with results dumped and loaded by persistd."""

    def configure(
        self, location: str, verbose: int = 1, backend_options: dict[str, Any] | None = None
    ) -> None:
        """As joblib's, except that ``mmap_mode`` with ``compress`` is fine:
        persistd maps compressed results from its decompressed segment."""
        options = dict(backend_options or {})
        mmap_mode = options.pop("mmap_mode", None)
        super().configure(location, verbose=verbose, backend_options=options)
        self.mmap_mode = mmap_mode

    def load_item(
        self,
        call_id: list[str],
        verbose: int = 1,
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Load a cached result (``KeyError`` if it is gone, as joblib's)."""
        full_path = os.path.join(self.location, *call_id)
        if verbose > 1:
            _print_loading(call_id, full_path, verbose, timestamp, metadata)
        filename = os.path.join(full_path, "output.pkl")
        if not self._item_exists(filename):
            raise KeyError(
                "Non-existing item (may have been cleared).\nFile %s does not exist" % filename
            )
        return persistd.load(filename, mmap_mode=self.mmap_mode)

    def dump_item(self, call_id: list[str], item: Any, verbose: int = 1) -> None:
        """Cache a result. Like joblib's, a failure warns (``CacheWarning``)
        instead of failing the call whose result it is."""
        try:
            item_path = os.path.join(self.location, *call_id)
            if not self._item_exists(item_path):
                self.create_location(item_path)
            if verbose > 10:
                print("Persisting in %s" % item_path)
            # Atomic by itself: readers see the old file or the whole new one.
            persistd.dump(item, os.path.join(item_path, "output.pkl"), compress=self.compress)
        except Exception as exc:
            warnings.warn(
                "Unable to cache to disk with persistd: %s: %s" % (type(exc).__name__, exc),
                CacheWarning,
                stacklevel=2,
            )


def _print_loading(
    call_id: list[str],
    full_path: str,
    verbose: int,
    timestamp: float | None,
    metadata: dict[str, Any] | None,
) -> None:
    """joblib's "[Memory] Loading ..." line."""
    elapsed = "{: <16}".format(format_time(time.time() - timestamp)) if timestamp else ""
    signature = os.path.basename(call_id[0])
    if metadata is not None and "input_args" in metadata:
        signature += "({})".format(
            ", ".join("{}={}".format(*item) for item in metadata["input_args"].items())
        )
    message = "[Memory]{}: Loading {}".format(elapsed, signature)
    print(message + "..." if verbose < 10 else "{} from {}".format(message, full_path))


def register() -> None:
    """Make ``backend="persistd"`` known to ``joblib.Memory`` (idempotent)."""
    register_store_backend(BACKEND_NAME, PersistdStoreBackend)


register()
