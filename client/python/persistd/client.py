"""``persistd.Client``, and the module-level ``dump``/``load`` on a default one.

As httpx has ``httpx.Client`` beside ``httpx.get``: most code calls
``persistd.dump``/``persistd.load``, which use a default client configured
from the environment ($PERSISTD_SOCKET, $PERSISTD_AUTOSTART; see
``paths.Settings``); code that talks to a particular daemon, wants a
deadline, or must never start a daemon makes its own::

    with persistd.Client("/run/user/1000/persistd.sock", autostart=False, timeout=60) as c:
        c.dump(model, "model.pkl", compress="lz4")
        model = c.load("model.pkl")

A client's methods are the single entry point of every dump and load, so
whatever applies to all of them (argument checks, dispatch) happens there.
A client may be used from many threads, and across ``fork``: each process
opens its own connection to the daemon on its first call (``transport``).

The public signatures spell ``Optional``/``Union`` rather than ``X | Y``:
``typing.get_type_hints`` (used by documentation and validation tools)
evaluates them, and Python 3.9 cannot evaluate ``X | Y``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, Optional, Union

from persistd import admin, api, paths, transport
from persistd.api import Compress, FileSource, FileTarget, MmapMode
from persistd.progress import Progress


class Client:
    """A persistd daemon to dump and load through.

    Parameters
    ----------
    socket: str or os.PathLike, optional
        The daemon's socket. Default: $PERSISTD_SOCKET, else
        $XDG_RUNTIME_DIR/persistd.sock, else /tmp/persistd-$UID/persistd.sock.
        Its directory must be private to you (mode 0700).
    timeout: float, optional (keyword)
        Seconds one dump or load may take in the daemon; past that it is
        cancelled there (a dump leaves no file) and ``TimeoutError`` is
        raised. Default None: no limit, as with joblib.
    autostart: bool, optional (keyword)
        Start a daemon on ``socket`` when none answers. Default:
        $PERSISTD_AUTOSTART, which defaults to on. Pass False where a
        supervisor (systemd) owns the daemon, so that a stopped daemon is an
        error rather than silently replaced.

    Invariant: the settings are fixed for the client's life; after
    ``close()`` every call raises ``RuntimeError``.
    """

    def __init__(
        self,
        socket: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        timeout: Optional[float] = None,
        autostart: Optional[bool] = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds or None, not %r"
                             % (timeout,))
        self._settings = paths.Settings.resolve(socket, autostart)
        self._endpoint = transport.Endpoint(
            self._settings.socket, autostart=self._settings.autostart, timeout=timeout
        )
        self._closed = False

    @property
    def socket(self) -> str:
        """The daemon's socket."""
        return self._settings.socket

    @property
    def autostart(self) -> bool:
        """Whether a daemon is started on ``socket`` when none answers."""
        return self._settings.autostart

    @property
    def timeout(self) -> Optional[float]:
        """Seconds one dump or load may take (None: no limit)."""
        return self._endpoint.timeout

    def dump(
        self,
        value: Any,
        filename: FileTarget,
        compress: Compress = 0,
        protocol: Optional[int] = None,
        *,
        progress: Progress = None,
    ) -> Optional[str]:
        """``persistd.dump`` through this client's daemon."""
        return api.dump(self._open_endpoint(), value, filename, compress, protocol,
                        progress_to=progress)

    def load(
        self,
        filename: FileSource,
        mmap_mode: MmapMode = None,
        ensure_native_byte_order: Union[bool, Literal["auto"]] = "auto",
        *,
        allow_pickle: bool = True,
        allowed_globals: Iterable[Union[str, Callable[..., Any]]] = (),
        progress: Progress = None,
    ) -> Any:
        """``persistd.load`` through this client's daemon."""
        return api.load(
            self._open_endpoint(), filename, mmap_mode, ensure_native_byte_order,
            allow_pickle=allow_pickle, allowed_globals=allowed_globals, progress_to=progress,
        )

    def status(self) -> dict[str, Any]:
        """The daemon's status, as ``persistctl status --json`` prints it
        (never starts a daemon: ``admin.NotRunning`` if none answers)."""
        self._open_endpoint()
        return admin.status(self.socket)

    def close(self) -> None:
        """End this process's session with the daemon. Arrays already loaded
        stay valid (their pages are mapped), but their segments are no
        longer leased: the daemon may evict them from its cache."""
        self._closed = True
        self._endpoint.close()

    def __enter__(self) -> Client:
        self._open_endpoint()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "persistd.Client(%r, timeout=%r, autostart=%r)%s" % (
            self.socket, self.timeout, self.autostart, " (closed)" if self._closed else ""
        )

    def _open_endpoint(self) -> transport.Endpoint:
        if self._closed:
            raise RuntimeError("this persistd.Client is closed: make a new one")
        return self._endpoint


_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The client of ``persistd.dump``/``persistd.load``: made on first use
    from the environment, and made anew (the old one closed) when the
    environment names another daemon, so setting $PERSISTD_SOCKET between
    calls takes effect as it always did."""
    global _default
    settings = paths.Settings.resolve()
    client = _default
    if client is not None and client._settings == settings:
        return client
    with _default_lock:
        client = _default
        if client is None or client._settings != settings:
            if client is not None:
                client.close()
            client = _default = Client(settings.socket, autostart=settings.autostart)
        return client


def _reset_lock_after_fork_in_child() -> None:
    """Another thread may have held the lock when the process forked."""
    global _default_lock
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_after_fork_in_child)


def dump(
    value: Any,
    filename: FileTarget,
    compress: Compress = 0,
    protocol: Optional[int] = None,
    *,
    progress: Progress = None,
) -> Optional[str]:
    """Persist an arbitrary Python object into one file, joblib's format.

    Parameters
    ----------
    value: any Python object
        The object to store. Arrays whose type is exactly ``np.ndarray``,
        ``np.matrix`` or ``np.memmap`` are stored as raw bytes after the
        pickle, as joblib stores them; everything else is pickled.
    filename: str, os.PathLike, or file object
        Where to store it. A path's extension ('.z', '.gz', '.bz2', '.lzma',
        '.xz', '.lz4', '.zst') selects the compressor unless ``compress``
        names one. A path is written atomically.
    compress: bool, int 0-9, str or (str, int), optional
        0/False: no compression. True: zlib level 1. 1-9: zlib at that
        level. 'zlib', 'gzip', 'bz2', 'lzma', 'xz', 'lz4', 'zstd': that
        method at its default level; a (method, level) tuple picks both.
    protocol: int, optional
        Pickle protocol; None (or negative) means pickle.HIGHEST_PROTOCOL.
    progress: bool or callable (persistd only; keyword)
        True: a progress bar on stderr (a terminal) once the dump has run
        0.5 s; a callable gets ``(done, total)`` bytes as the daemon
        compresses; None: $PERSISTD_PROGRESS (1: a bar). See
        ``persistd.progress``.

    Returns
    -------
    The filename as a str for paths, None for file objects.
    """
    return default_client().dump(value, filename, compress, protocol, progress=progress)


def load(
    filename: FileSource,
    mmap_mode: MmapMode = None,
    ensure_native_byte_order: Union[bool, Literal["auto"]] = "auto",
    *,
    allow_pickle: bool = True,
    allowed_globals: Iterable[Union[str, Callable[..., Any]]] = (),
    progress: Progress = None,
) -> Any:
    """Reconstruct a Python object from a file persisted with ``dump`` (or
    with joblib.dump, any version back to 0.8).

    WARNING: like joblib.load this unpickles, which can execute arbitrary
    code: never load files from untrusted sources, unless with
    ``allow_pickle=False``.

    Parameters
    ----------
    filename: str, bytes, os.PathLike, or file object
    mmap_mode: {None, 'r+', 'r', 'w+', 'c'}, optional
        None loads arrays into private memory (copy-on-write pages of the
        daemon's shared segment). 'r' and 'c' memory-map arrays, from the
        decompressed segment for compressed files. 'r+' (and 'w+', treated as
        'r+') map an uncompressed file itself, so writes reach it; with a
        compressed file they are ignored with a warning.
    ensure_native_byte_order: bool or 'auto'
        Swap arrays to the host's byte order. 'auto' means True when
        ``mmap_mode`` is None; True with a ``mmap_mode`` is an error.
    allow_pickle: bool (persistd only; keyword)
        False restores only NumPy arrays, dtypes and scalars and builtin
        containers and scalars; any other global in the file raises
        ``pickle.UnpicklingError`` naming it, before its module is imported.
    allowed_globals: iterable of str or classes (persistd only; keyword)
        With ``allow_pickle=False``, more globals to admit ("module.name"
        strings, or the objects themselves).
    progress: bool or callable (persistd only; keyword)
        As for ``dump``: the bytes of the file the daemon has decoded while
        it builds the shared segment.
    """
    return default_client().load(
        filename, mmap_mode, ensure_native_byte_order,
        allow_pickle=allow_pickle, allowed_globals=allowed_globals, progress=progress,
    )
