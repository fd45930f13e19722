"""gRPC status codes from the daemon, turned into the exceptions joblib raises.

Callers of ``dump``/``load`` catch ``FileNotFoundError``, ``ValueError`` for a
corrupt file, ``PermissionError`` and ``OSError``; they should not have to
know that a daemon and gRPC sit in between. The daemon's message is kept as
the exception text because it names the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import os

import grpc


def daemon_error(err: grpc.RpcError, method: str, filename: str | None = None) -> Exception:
    """The Python exception for a failed RPC (``raise daemon_error(...) from None``).

    ``filename`` is the user's path, when the call concerned one: OSError
    subclasses then carry it like the builtins' errors do.
    """
    code = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    status = grpc.StatusCode
    if code == status.INVALID_ARGUMENT or code == status.DATA_LOSS:
        return ValueError(details)
    if code == status.NOT_FOUND:
        return _os_error(FileNotFoundError, errno.ENOENT, details, filename)
    if code == status.PERMISSION_DENIED:
        return _os_error(PermissionError, errno.EACCES, details, filename)
    if code == status.ALREADY_EXISTS:
        return _os_error(FileExistsError, errno.EEXIST, details, filename)
    if code == status.RESOURCE_EXHAUSTED:
        return _os_error(OSError, errno.ENOSPC, details, filename)
    if code == status.DEADLINE_EXCEEDED:
        return TimeoutError(
            "persistd %s did not finish within the client's timeout (%s); it was "
            "cancelled: raise persistd.Client(timeout=...)" % (method, details))
    if code == status.UNAVAILABLE:
        return ConnectionError("persistd is unavailable (%s failed): %s" % (method, details))
    if code == status.FAILED_PRECONDITION:
        return _os_error(OSError, errno.EINVAL, details, filename)
    name = code.name if code is not None else "UNKNOWN"
    return RuntimeError("persistd %s failed (%s): %s" % (method, name, details))


def _os_error(
    cls: type[OSError], number: int, details: str, filename: str | None
) -> OSError:
    if filename is None:
        return cls(number, details)
    return cls(number, details, os.fsdecode(filename))
