"""The connection to the daemon: channel, descriptors, session, leases, segments.

An ``Endpoint`` is one daemon (a socket) as a ``persistd.Client`` reaches
it; it holds one connection per process. The connection is keyed by
``os.getpid()`` because gunicorn and multiprocessing fork after the parent
has used the client: a child must build its own channel and session and
must never touch the parent's, not even to close it (closing would act on
gRPC state the parent still uses). The parent's objects are therefore
parked in ``_orphans`` in the child and simply never used again.

Fork findings (grpcio 1.85, checked with multiprocessing's fork method):
without ``GRPC_ENABLE_FORK_SUPPORT=1`` a child's first RPC fails, hangs or
aborts in about a third of forks, even with no call open in the parent, so
``persistd/__init__.py`` sets it unless the user did. With it, gRPC's
pre-fork handler waits until its polling thread is idle; the open ``Attach``
stream keeps that thread waiting for events, so every fork stalled about
1 s. ``_wake_spin_thread`` (registered after gRPC's handler, so it runs
first) starts a tiny ``Status`` call whose completion wakes the thread right
away: forks then take milliseconds. The single-threaded unary-stream channel
option (no polling thread) is worse: children hang in gRPC's fork handler.

Leases: every ``Load`` under a session pins the segment it returns until
``Release``. Arrays built on a segment keep a ``Lease`` object alive; when
the last of them is collected, a ``weakref.finalize`` callback *appends* the
lease to its endpoint's ``pending`` list, and the endpoint's next RPC in
this process sends the releases.
Nothing network-related ever runs inside a GC callback. When the process
exits, the ``Attach`` stream ends and the daemon drops the session's leases.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import threading
import weakref
from collections.abc import Callable

from typing import Any, List, Tuple

import grpc

from persistd import autostart, paths
from persistd._version import __version__
from persistd._proto import persistd_pb2 as pb
from persistd.descriptors import DescriptorChannel
from persistd._proto import persistd_pb2_grpc as pb_grpc
from persistd.errors import daemon_error

_CLIENT_NAME = "python/" + __version__

#: How long a probe (Status) may take before the daemon counts as not running.
_PROBE_TIMEOUT_S = 2.0
#: Deadline of the small control RPCs (release); bulk work has none.
_CONTROL_TIMEOUT_S = 60.0

#: gRPC channel options. The reconnect backoff is gRPC's default for the
#: network (1 s, growing 1.6x to 120 s) cut to what a local socket needs: a
#: daemon that restarts listens again within milliseconds, and a channel
#: still backing off from the old one's exit would fail calls for seconds.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 250),
]

#: Every endpoint of this process, for the fork hooks.
_endpoints: weakref.WeakSet[Endpoint] = weakref.WeakSet()
#: Connections inherited from a parent process: kept alive, never used.
_orphans: list[Connection] = []
#: In-flight wake-up calls made by the fork hook (kept so they are not cancelled).
_wakers: list[Any] = []
_wake_hook_registered = False

#: (session_id, lease_id) pairs whose arrays were collected: appended to by
#: GC callbacks only (list.append is atomic), drained before each RPC.
PendingReleases = List[Tuple[str, str]]


class _StaleSession(Exception):
    """The daemon does not know the session any more (it restarted)."""


class Lease:
    """Held by every array built on a segment; its death releases the lease."""

    __slots__ = ("__weakref__", "lease_id", "session_id")

    def __init__(self, session_id: str, lease_id: str, pending: PendingReleases) -> None:
        self.session_id = session_id
        self.lease_id = lease_id
        finalizer = weakref.finalize(self, pending.append, (session_id, lease_id))
        finalizer.atexit = False  # the daemon drops leases when we exit


class Segment(mmap.mmap):
    """A mapping of a daemon segment. A subclass only so that it can carry
    the ``Lease`` of the load it came from as an attribute: arrays made with
    ``np.frombuffer`` keep the mapping, hence the lease, alive."""

    lease: Lease | None = None


class Connection:
    """Channel, stub and (lazily) session of one process."""

    def __init__(self, socket: str, pending: PendingReleases | None = None) -> None:
        self.pid = os.getpid()
        self.socket = socket
        #: The endpoint's queue of collected leases (a probe has none).
        self.pending: PendingReleases = [] if pending is None else pending
        self.channel = grpc.insecure_channel("unix:" + socket, options=CHANNEL_OPTIONS)
        self.stub: Any = pb_grpc.PersistdStub(self.channel)  # type: ignore[no-untyped-call]
        _register_wake_hook()
        self.broken = False
        self._descriptors: DescriptorChannel | None = None
        self._descriptors_lock = threading.Lock()
        self._attach: Any = None
        self._session_id = ""
        self._session_lock = threading.Lock()

    # -- liveness ---------------------------------------------------------
    def probe(self, timeout: float = _PROBE_TIMEOUT_S) -> bool:
        """True when the daemon answers ``Status``; a daemon that speaks
        another protocol version is an error, not a daemon that is down."""
        try:
            reply = self.stub.Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        if reply.protocol != pb.PROTOCOL_CURRENT:
            raise ConnectionError(
                "persistd %s at %s speaks protocol %d, this client (%s) protocol %d: "
                "install the same version of both (restart the daemon after an "
                "upgrade)" % (reply.version, self.socket, reply.protocol, _CLIENT_NAME,
                              pb.PROTOCOL_CURRENT)
            )
        return True

    # -- descriptors --------------------------------------------------------
    def send_fds(self, fds: list[int]) -> bytes:
        """Hands descriptors to the daemon; the token names them in a call."""
        with self._descriptors_lock:
            if self._descriptors is None:
                try:
                    self._descriptors = DescriptorChannel(self.socket + ".fds")
                except (FileNotFoundError, ConnectionRefusedError) as exc:
                    self.broken = True
                    raise ConnectionError(
                        "persistd's descriptor socket %s.fds: %s" % (self.socket, exc)
                    ) from None
            channel = self._descriptors
        try:
            return channel.send(fds)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.broken = True
            raise ConnectionError("persistd went away: %s" % exc) from None

    # -- session ----------------------------------------------------------
    def session_id(self) -> str:
        """The session of this process, opened by the first load (and
        reopened when the daemon ended the stream, e.g. after a restart)."""
        with self._session_lock:
            if self._attach is None or self._attach.done():
                request = pb.AttachRequest(pid=os.getpid(), client=_CLIENT_NAME)
                call = self.stub.Attach(request)
                try:
                    event = next(call)
                except grpc.RpcError as err:
                    raise self._failed(err, "Attach", None) from None
                except StopIteration:
                    raise ConnectionError(
                        "persistd ended the Attach stream without a session id"
                    ) from None
                self._attach = call
                self._session_id = event.session_id
            return self._session_id

    def forget_session(self) -> None:
        """Drop a session the daemon no longer knows; the next load reattaches."""
        with self._session_lock:
            if self._attach is not None:
                with contextlib.suppress(Exception):
                    self._attach.cancel()
            self._attach = None
            self._session_id = ""

    def has_session(self) -> bool:
        return self._attach is not None

    # -- calls ------------------------------------------------------------
    def invoke(
        self, method: str, request: Any, filename: str | None, timeout: float | None
    ) -> Any:
        self.flush_releases()
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            if (
                err.code() == grpc.StatusCode.FAILED_PRECONDITION
                and getattr(request, "session_id", "")
                and "session" in (err.details() or "")
            ):
                raise _StaleSession(err.details()) from None
            raise self._failed(err, method, filename) from None

    def invoke_while(
        self,
        method: str,
        request: Any,
        filename: str | None,
        work: Callable[[Callable[[], bool]], None],
        timeout: float | None,
    ) -> Any:
        """Start the call, run ``work`` while it runs, then wait for it.
        ``work`` is given a function that tells whether the call is over
        (work that waits on the daemon must stop waiting then)."""
        self.flush_releases()
        future = getattr(self.stub, method).future(request, timeout=timeout)
        try:
            work(future.done)
            return future.result()
        except grpc.RpcError as err:
            raise self._failed(err, method, filename) from None
        except BaseException:
            future.cancel()  # the daemon sees it and stops
            raise

    def _failed(self, err: grpc.RpcError, method: str, filename: str | None) -> Exception:
        """The Python exception for a failed call; a daemon that is gone
        (UNAVAILABLE) marks this connection broken, to be remade."""
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            self.broken = True
        return daemon_error(err, method, filename)

    def flush_releases(self) -> None:
        """Send the releases queued by GC callbacks (this session's only:
        leases of a parent process or of a dead session are not ours)."""
        while self.pending:
            try:
                session_id, lease_id = self.pending.pop()
            except IndexError:
                break
            if session_id != self._session_id or self.pid != os.getpid():
                continue
            try:
                self.stub.Release(
                    pb.ReleaseRequest(session_id=session_id, lease_id=lease_id),
                    timeout=_CONTROL_TIMEOUT_S,
                )
            except grpc.RpcError:
                pass  # the daemon may have dropped it already

    def close(self) -> None:
        """End the session and the channel (only ever in the owning process)."""
        if self.pid != os.getpid():
            return
        with contextlib.suppress(Exception):
            self.flush_releases()
        if self._attach is not None:
            with contextlib.suppress(Exception):
                self._attach.cancel()
        if self._descriptors is not None:
            self._descriptors.close()
        with contextlib.suppress(Exception):
            self.channel.close()


class Endpoint:
    """One daemon, as this process reaches it: its socket, whether to start
    it when it does not answer, the deadline of bulk calls, and this
    process's connection to it (made on demand, remade after a fork or when
    the daemon went away).

    Invariant: ``_connection`` is None or was made in this process (the
    fork hook parks a parent's in ``_orphans``); leases of this endpoint's
    loads are released through ``pending`` on its next call.
    """

    def __init__(self, socket: str, *, autostart: bool, timeout: float | None) -> None:
        self.socket = socket
        self.autostart = autostart
        #: Deadline of each Dump/Load, in seconds (None: as long as it takes).
        self.timeout = timeout
        self.pending: PendingReleases = []
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        _endpoints.add(self)

    def connection(self) -> Connection:
        """This process's connection, created (and the daemon started) on demand."""
        conn = self._connection
        if conn is not None and conn.pid == os.getpid() and not conn.broken:
            return conn
        with self._lock:
            conn = self._connection
            if conn is not None and conn.pid != os.getpid():
                _orphans.append(conn)  # a parent's: keep it alive, never touch it
                conn = self._connection = None
            if conn is not None and conn.broken:
                conn.close()
                conn = self._connection = None
            if conn is None:
                if _orphans and not _fork_support_enabled():
                    _warn_fork_support()
                conn = self._connection = self._connect()
            return conn

    def call(
        self,
        method: str,
        request: Any,
        *,
        filename: str | None = None,
        timeout: float | None = None,
        retry: bool = False,
    ) -> Any:
        """One unary RPC, errors mapped to Python exceptions.

        ``retry`` lets the first RPC of an operation survive a daemon that
        went away since the connection was made: the connection is rebuilt
        (which may start the daemon) and the call is made once more. Later
        RPCs of the same operation refer to state of the daemon that
        answered the first one, so they must not be retried.
        """
        conn = self.connection()
        try:
            return conn.invoke(method, request, filename, timeout)
        except ConnectionError:
            if not retry:
                raise
        return self.connection().invoke(method, request, filename, timeout)

    def load(
        self,
        *,
        fd: int = -1,
        source_inline: bytes = b"",
        raw: bool = False,
        lease: bool = True,
        transient: bool = False,
        filename: str | None = None,
        remote: Any = None,
    ) -> tuple[Any, str]:
        """``Load`` of the file open at ``fd`` (or of ``source_inline``, or
        of the object-store object ``remote``, a ``pb.RemoteObject``: see
        ``persistd.remote``) under this process's session. Returns (reply,
        session_id).

        Retried once on a fresh connection when the daemon went away (the
        descriptor is sent again: the caller still holds it), and once with
        a new session when the daemon no longer knows ours (it restarted
        while our channel reconnected by itself).
        """
        for _attempt in range(3):
            conn = self.connection()
            try:
                session = conn.session_id() if lease else ""
                request = pb.LoadRequest(
                    session_id=session, raw=raw, transient=transient,
                    display_name=filename or "",
                )
                if remote is not None:
                    request.remote.CopyFrom(remote)
                elif fd >= 0:
                    request.fds_token = conn.send_fds([fd])
                else:
                    request.source_inline = source_inline
                return conn.invoke("Load", request, filename, self.timeout), session
            except _StaleSession:
                conn.forget_session()
            except ConnectionError:
                conn.broken = True
        raise ConnectionError("persistd: Load of %r failed after reconnecting" % filename)

    def dump(
        self,
        request: Any,
        fds: list[int],
        filename: str | None,
        while_running: Callable[[], None] | None = None,
    ) -> Any:
        """``Dump`` into the descriptors ``fds`` (target, then payload if not
        inline). ``while_running`` runs while the daemon works (it fills a
        streamed payload); if it raises, the call is cancelled, and the
        daemon stops. Retried once on a fresh connection if the daemon went
        away before it wrote anything (and nothing was streamed yet)."""
        for attempt in (0, 1):
            conn = self.connection()
            try:
                request.fds_token = conn.send_fds(fds)
                if while_running is None:
                    return conn.invoke("Dump", request, filename, self.timeout)
                return conn.invoke_while(
                    "Dump", request, filename, lambda _ended: while_running(), self.timeout
                )
            except ConnectionError:
                conn.broken = True
                if attempt == 1 or while_running is not None or os.fstat(fds[0]).st_size != 0:
                    raise
        raise AssertionError("unreachable")

    def make_lease(self, session_id: str, lease_id: str) -> Lease | None:
        """The lease of a load's segment, released when it is collected."""
        return Lease(session_id, lease_id, self.pending) if session_id and lease_id else None

    def close(self) -> None:
        """End this process's session and channel (leases end with the
        session: arrays already loaded stay valid, their mappings are ours).
        The endpoint stays usable: the next call connects again."""
        with self._lock:
            conn, self._connection = self._connection, None
        if conn is not None:
            conn.close()  # a no-op for a parent's connection

    # -- connecting and starting the daemon ----------------------------------
    def _connect(self) -> Connection:
        """A connection to a daemon that answers, started if need be (see
        ``persistd.autostart``)."""
        socket = self.socket
        # Whoever can write where the socket lives could put their own
        # daemon there: refuse such places before talking to anything in them.
        paths.check_private_directory(os.path.dirname(socket) or ".")
        conn = Connection(socket, self.pending)
        try:
            if conn.probe():
                return conn
        except BaseException:
            conn.close()
            raise
        # This channel failed to connect and is backing off: later probes
        # and the calls after the start go through fresh ones.
        conn.close()
        autostart.ensure_running(
            socket, lambda timeout: _probe(socket, timeout), allowed=self.autostart
        )
        return Connection(socket, self.pending)

    def _after_fork_in_child(self) -> None:
        """A fresh lock (the parent's may have been held by another thread
        at fork time) and no current connection (the parent's is parked)."""
        self._lock = threading.Lock()
        if self._connection is not None:
            _orphans.append(self._connection)
            self._connection = None

    def _wake(self) -> None:
        conn = self._connection
        if conn is None or conn.pid != os.getpid() or not conn.has_session():
            return
        with contextlib.suppress(Exception):
            _wakers.append(conn.stub.Status.future(pb.StatusRequest(), timeout=5))


def map_segment(path: str, lease: Lease | None) -> Segment:
    """A private copy-on-write mapping of a segment: arrays on it are
    writable and their pages stay shared with other processes until written."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        segment = Segment(fd, 0, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    segment.lease = lease
    return segment


def _probe(socket: str, timeout: float) -> bool:
    """Whether a daemon answers on ``socket``, asked on a fresh channel (a
    channel that failed to connect fails calls at once while it backs off)."""
    conn = Connection(socket)
    try:
        return conn.probe(timeout)
    finally:
        conn.close()


def _warn_fork_support() -> None:
    import warnings

    warnings.warn(
        "persistd: this process was forked after its parent used persistd, but "
        "gRPC's fork support is off (GRPC_ENABLE_FORK_SUPPORT=%r, or grpc was "
        "imported before persistd); gRPC calls in forked children may hang. "
        "Set GRPC_ENABLE_FORK_SUPPORT=1 before grpc is imported."
        % os.environ.get("GRPC_ENABLE_FORK_SUPPORT"),
        RuntimeWarning,
        stacklevel=4,
    )


def _register_wake_hook() -> None:
    """Once, after gRPC registered its own fork handlers (at its first
    channel): ``before`` hooks run last-registered first, so ours precedes
    gRPC's pre-fork wait."""
    global _wake_hook_registered
    if not _wake_hook_registered:
        _wake_hook_registered = True
        os.register_at_fork(before=_wake_spin_thread)


def _wake_spin_thread() -> None:
    """Before a fork: give gRPC's polling thread an event to wake up on, so
    that gRPC's pre-fork handler need not wait out its poll timeout."""
    del _wakers[: max(0, len(_wakers) - 8)]
    for endpoint in list(_endpoints):
        endpoint._wake()


def _fork_support_enabled() -> bool:
    try:
        from grpc._cython import cygrpc

        return bool(cygrpc.is_fork_support_enabled())
    except Exception:  # an internal API: assume the best if it moved
        return True


def _reset_after_fork_in_child() -> None:
    for endpoint in list(_endpoints):
        endpoint._after_fork_in_child()


def _close_at_exit() -> None:
    for endpoint in list(_endpoints):
        endpoint.close()


os.register_at_fork(after_in_child=_reset_after_fork_in_child)
atexit.register(_close_at_exit)
