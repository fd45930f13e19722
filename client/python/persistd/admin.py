"""Administrative calls on a running daemon: status, segments, eviction, stop.

These never start a daemon (asking for the status of a stopped daemon must
not start one), and they return plain dicts so ``persistctl --json`` prints
them as they are and scripts need no protobuf.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from persistd import paths
from persistd._proto import persistd_pb2 as pb
from persistd._proto import persistd_pb2_grpc as pb_grpc

#: Deadline of one administrative call.
TIMEOUT_S = 10.0


class NotRunning(ConnectionError):
    """No daemon answers on the socket."""


@contextlib.contextmanager
def stub(socket: str | None = None) -> Iterator[Any]:
    """A stub on ``socket`` (default: the client's), after the same check of
    the socket's directory the client makes before it talks to a daemon."""
    socket = socket or paths.socket_path()
    paths.check_private_directory(os.path.dirname(os.path.abspath(socket)))
    # Imported here: transport's options, without importing it at module
    # level (it registers fork hooks).
    from persistd.transport import CHANNEL_OPTIONS

    with grpc.insecure_channel("unix:" + socket, options=CHANNEL_OPTIONS) as channel:
        yield pb_grpc.PersistdStub(channel)  # type: ignore[no-untyped-call]


def _call(socket: str | None, method: str, request: Any) -> Any:
    with stub(socket) as s:
        try:
            return getattr(s, method)(request, timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                raise NotRunning(
                    "persistd is not running at %s" % (socket or paths.socket_path())
                ) from None
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise RuntimeError(
                    "the daemon at %s is older than this client and has no %s: "
                    "restart it with the daemon of this version"
                    % (socket or paths.socket_path(), method)
                ) from None
            raise RuntimeError("persistd %s failed: %s" % (method, err.details())) from None


def _as_dict(message: Any) -> dict[str, Any]:
    """A message as a dict with every field (zeros too), enums by name,
    integers as ints (protobuf's JSON mapping would make 64-bit ones strings)."""
    return {field.name: _value(field, getattr(message, field.name))
            for field in message.DESCRIPTOR.fields}


def _value(field: Any, value: Any) -> Any:
    if _is_repeated(field):
        return [_scalar(field, item) for item in value]
    return _scalar(field, value)


def _scalar(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return _as_dict(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if isinstance(value, bytes):
        return value.hex()
    return value


def _is_repeated(field: Any) -> bool:
    # protobuf >= 5 has is_repeated; older ones only label.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def status(socket: str | None = None) -> dict[str, Any]:
    """The daemon's Status reply."""
    return _as_dict(_call(socket, "Status", pb.StatusRequest()))


def list_segments(socket: str | None = None) -> list[dict[str, Any]]:
    """The daemon's cached segments, oldest build first."""
    reply = _call(socket, "ListSegments", pb.ListSegmentsRequest())
    segments = [_as_dict(info) for info in reply.segments]
    segments.sort(key=lambda info: info["generation"])
    return segments


def evict(
    socket: str | None = None,
    *,
    all: bool = False,
    stale: bool = False,
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """Stop serving segments: every one, the stale ones, or those of the
    given source files. A file that exists is named by its identity (as
    loads know it, however it was named then), and by its path too."""
    request = pb.EvictRequest(all=all, stale=stale)
    for source in sources:
        absolute = os.path.abspath(source)
        request.source_paths.extend(sorted({source, absolute}))
        with contextlib.suppress(OSError):
            info = os.stat(source)
            if stat.S_ISREG(info.st_mode):
                request.files.add(dev=info.st_dev, ino=info.st_ino)
    return _as_dict(_call(socket, "Evict", request))


def stop(socket: str | None = None, timeout: float = 10.0) -> int:
    """SIGTERM to the daemon (the pid its Status gives), if it runs as this
    user; returns its pid once it has exited."""
    pid = int(status(socket)["pid"])
    try:
        owner = os.stat("/proc/%d" % pid).st_uid
        with open("/proc/%d/comm" % pid) as f:
            command = f.read().strip()
    except OSError:
        raise RuntimeError(
            "the daemon reports pid %d, which this system does not show (another "
            "pid namespace?): stop it where it runs" % pid
        ) from None
    if owner != os.getuid():
        raise PermissionError(
            "persistd (pid %d) runs as uid %d, not as you (uid %d): stop it as its "
            "owner" % (pid, owner, os.getuid())
        )
    if command != "persistd":
        raise RuntimeError(
            "pid %d is %r, not persistd: not stopping it" % (pid, command)
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(
                "persistd (pid %d) is still running %.0f s after SIGTERM" % (pid, timeout)
            )
        time.sleep(0.01)
    return pid


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            # A zombie (our own child, not reaped yet) has exited.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
