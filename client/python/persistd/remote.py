"""``load`` and ``dump`` of object-store URLs (s3://, gs://, memory://, ...).

One fetch and one decompressed copy per node: the node's daemon keys a
remote object's segment by its identity as the store reports it (URL plus
version id or ETag, and size; last-modified when the store reports
neither). The first process that loads a version becomes its fetcher (the
daemon answers its ``Load`` with a fetch ticket); every other process on
the node, in this process or another, waits for that segment. The fetcher
reads the object with ``fetch.RangedFetch`` into a staging memfd that the
daemon decompresses while the ranges land.

Credentials are fsspec's business (environment, profiles, its config
file): the daemon never sees one, and never opens a URL; it gets the
bytes through a descriptor like any file. fsspec is optional: without
it a URL raises ImportError naming ``persistd[fsspec]``.

Dumps write the file into a private unnamed temp file (the daemon fills
it as for a path), upload it in parts, then warm the node's cache under
the uploaded object's identity, so the next load of it on this node needs
no GET.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import errno
import hashlib
import os
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from persistd import transport
from persistd._proto import persistd_pb2 as pb
from persistd.fetch import RangedFetch
from persistd.files import STREAM_HEADER_BYTES, memory_file, seal
from persistd.unpickling import Loader

#: A URL names its protocol ("s3://", "gs://", "memory://", "file://"...),
#: or starts an fsspec chain ("simplecache::s3://...").
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*(://|::)")
#: Upload part size (S3 needs at least 5 MiB per part but the last).
UPLOAD_PART_BYTES = 8 << 20
_READ_ONLY = ("http", "https")


def is_url(name: Any) -> bool:
    """Whether ``name`` is an fsspec URL rather than a local path."""
    return isinstance(name, str) and _URL.match(name) is not None


def public_name(url: str) -> str:
    """``url`` without what may be a secret: a password in it, or a query
    (a presigned URL's signature), which is replaced by a digest so that
    URLs that differ only there still name different objects. This is the
    name the daemon keys, logs and lists; fsspec gets the URL as given."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = ""
    if parts.query:
        query = "sha256=" + hashlib.sha256(parts.query.encode()).hexdigest()[:16]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def load(
    endpoint: transport.Endpoint,
    url: str,
    mode: str | None,
    ensure: bool,
    allowed: frozenset[str] | None,
) -> Any:
    """``persistd.load(url, ...)``: the value of the object at ``url``.
    ``mode`` is the effective mmap_mode ('r' and 'c' map the node's shared
    segment; 'r+' has no file to write through)."""
    if mode == "r+":
        raise ValueError(
            "mmap_mode 'r+' maps a file so that writes reach it; %s is an object "
            "in a store, not a file: use mmap_mode='r' or 'c' (the node's shared "
            "decompressed copy), or None" % url
        )
    fs, path = _filesystem(url)
    url = public_name(url)  # what the daemon, logs and messages see
    info = _info(fs, path, url)
    if info.get("type") == "directory":
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), url)
    size = int(info.get("size") or 0)
    if size == 0:
        raise EOFError("Ran out of input")
    identity = _identity(url, info)
    if identity is None:
        reply, session_id = _load_unversioned(endpoint, fs, path, url, size)
    else:
        reply, session_id = _load_versioned(endpoint, fs, path, url, identity)
    loader = Loader(
        endpoint,
        reply,
        session_id,
        mmap_mode=mode,
        ensure_native=ensure,
        source_fd=-1,
        filename=url,
        dirname="",  # companions of joblib < 0.10 files are not fetched
        allowed_globals=allowed,
    )
    return loader.load()


def dump(
    endpoint: transport.Endpoint,
    url: str,
    write: Callable[[int, str, bool], Any],
    *,
    appends: bool = False,
) -> str:
    """``persistd.dump(value, url, ...)``: ``write(fd, name, warm)`` has
    the daemon write the joblib file into the empty temp file ``fd`` (as
    ``name``, the URL without secrets, and told not to warm its cache: the
    file's identity is not the object's); the file is uploaded, and the
    node's cache warmed for the new object. With ``appends`` (a compressed
    dump: the daemon only appends, and every byte below the file's size is
    final) the upload runs while the daemon compresses, part by part.
    Returns ``url``. A failed upload leaves no object (its multipart upload
    is aborted), and nothing is left locally."""
    fs, path = _filesystem(url)
    name = public_name(url)
    if fs.protocol in _READ_ONLY or (isinstance(fs.protocol, tuple) and fs.protocol[0] in _READ_ONLY):
        raise ValueError(
            "%s: http(s) URLs are read-only; dump to an object store (s3://, gs://, "
            "...) or a path" % name
        )
    fd = os.open(tempfile.gettempdir(), os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        if appends:
            _write_while_uploading(fs, path, name, fd, lambda: write(fd, name, False))
        else:
            write(fd, name, False)
            size = os.fstat(fd).st_size
            _upload(fs, path, name, fd, lambda: size)
        identity = _identity(name, _info(fs, path, name))
        if identity is not None:
            _warm(endpoint, name, identity, fd)
    finally:
        os.close(fd)
    return url


# -- loading -------------------------------------------------------------------
def _load_versioned(
    endpoint: transport.Endpoint, fs: Any, path: str, url: str, identity: Any
) -> tuple[Any, str]:
    """The node's segment of this version: cached, fetched by another
    process, or fetched here when the daemon makes us the fetcher."""
    reply, session_id = endpoint.load(remote=identity, filename=url)
    if not reply.fetch_ticket:
        return reply, session_id
    size = int(identity.size)
    fd = memory_file("persistd-fetch", STREAM_HEADER_BYTES + size)
    try:
        seal(fd, writable=True)

        def verify() -> None:
            now = _identity(url, _info(fs, path, url))
            if now != identity:
                raise OSError(
                    errno.ESTALE,
                    "%s changed while persistd fetched it (%s -> %s); load it again"
                    % (url, _describe(identity), _describe(now)),
                    url,
                )

        fetch = RangedFetch(fs, path, url, size, fd, streamed=True, verify=verify)
        return _redeem(endpoint, reply.fetch_ticket, session_id, fd, url, fetch), session_id
    finally:
        os.close(fd)


def _redeem(
    endpoint: transport.Endpoint,
    ticket: str,
    session_id: str,
    fd: int,
    url: str,
    work: Callable[[Callable[[], bool]], None] | None,
) -> Any:
    """Hands the staging descriptor to the daemon under ``ticket``; with
    ``work`` (a fetch still to do) the daemon builds while it runs, and a
    failed fetch cancels the call (the daemon keeps nothing)."""
    conn = endpoint.connection()
    request = pb.LoadRequest(
        session_id=session_id,
        fds_token=conn.send_fds([fd]),
        fetch_ticket=ticket,
        fetch_streamed=work is not None,
        display_name=url,
    )
    if work is None:
        return conn.invoke("Load", request, url, endpoint.timeout)
    return conn.invoke_while("Load", request, url, work, endpoint.timeout)


def _load_unversioned(
    endpoint: transport.Endpoint, fs: Any, path: str, url: str, size: int
) -> tuple[Any, str]:
    """A store that reports no version of the object (neither etag nor
    modification time): nothing can tell a cached copy from a changed
    object, so this process fetches it for itself, uncached."""
    fd = memory_file("persistd-fetch", size)
    try:
        RangedFetch(fs, path, url, size, fd, streamed=False, verify=lambda: None)()
        seal(fd)
        return endpoint.load(fd=fd, transient=True, filename=url)
    finally:
        os.close(fd)


# -- dumping -------------------------------------------------------------------
def _write_while_uploading(
    fs: Any, path: str, url: str, fd: int, write: Callable[[], Any]
) -> None:
    """Runs ``write`` (the daemon appends the file) while a thread uploads
    the parts it has finished; the last part goes once it returns."""
    final: list[int] = []  # the file's size, once written
    stop = threading.Event()  # set when the upload is to end: written or failed
    failed: list[BaseException] = []

    def size() -> int | None:
        return final[0] if final else None

    def upload() -> None:
        try:
            _upload(fs, path, url, fd, size, stop)
        except BaseException as exc:  # reported by the caller's thread
            failed.append(exc)

    uploader = threading.Thread(target=upload, name="persistd-upload", daemon=True)
    uploader.start()
    try:
        write()
        final.append(os.fstat(fd).st_size)
    finally:
        stop.set()
        uploader.join()
    if failed:
        raise failed[0]


def _upload(
    fs: Any,
    path: str,
    url: str,
    fd: int,
    final_size: Callable[[], int | None],
    growing: threading.Event | None = None,
) -> None:
    """Streams the file at ``fd`` to ``path`` in parts, committed only once
    whole (a multipart upload is aborted on failure). ``final_size()`` is
    None while the file still grows: then whole parts below its size go up,
    waiting on ``growing`` between looks; set with no final size, it
    means the write failed."""
    target = fs.open(path, "wb", block_size=UPLOAD_PART_BYTES, autocommit=False)
    try:
        offset = 0
        while True:
            final = final_size()
            ready = final if final is not None else os.fstat(fd).st_size
            while ready - offset >= UPLOAD_PART_BYTES or (final is not None and offset < ready):
                part = os.pread(fd, min(UPLOAD_PART_BYTES, ready - offset), offset)
                if not part:
                    raise EOFError("persistd: the dumped file for %s ended early" % url)
                target.write(part)
                offset += len(part)
            if final is not None:
                break
            assert growing is not None
            if growing.wait(0.01) and final_size() is None:
                raise RuntimeError("persistd: the dump to %s failed; nothing was uploaded" % url)
        target.close()
        target.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            target.discard()
        with contextlib.suppress(Exception):
            target.closed = True  # never committed by a later close()
        raise


def _warm(endpoint: transport.Endpoint, url: str, identity: Any, fd: int) -> None:
    """Builds the node's segment of the object just uploaded from the file
    it was uploaded from (no GET). A failure here costs only the warm
    cache: the object is uploaded."""
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        reply, session_id = endpoint.load(remote=identity, filename=url)
        if reply.fetch_ticket:
            reply = _redeem(endpoint, reply.fetch_ticket, session_id, fd, url, None)
        # The dump keeps no lease: the segment stays cached for the loads.
        lease = endpoint.make_lease(session_id, reply.lease_id)
        del lease


# -- the store -----------------------------------------------------------------
def _filesystem(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ImportError(
            "persistd: %s is a URL; loading and dumping URLs needs fsspec (and the "
            "store's own package, e.g. s3fs or gcsfs): pip install persistd[fsspec]"
            % url
        ) from None
    fs, path = url_to_fs(url)
    return fs, path


def _info(fs: Any, path: str, url: str) -> dict[str, Any]:
    """What the store says of the object now (not a listing cached by
    fsspec). Missing bucket or key: FileNotFoundError, as fsspec raises."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    try:
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, "No such object: %s" % url, url) from exc
    return info


def _identity(url: str, info: dict[str, Any]) -> Any | None:
    """The RemoteObject naming this version of the object, or None when
    the store reports no version (neither etag nor modification time)."""
    etag = ""
    for key, prefix in (("VersionId", "version:"), ("generation", "generation:"),
                        ("ETag", ""), ("etag", ""), ("md5Hash", "md5:")):
        value = info.get(key)
        if value:
            etag = prefix + str(value)
            break
    mtime_ns = 0
    for key in ("LastModified", "last_modified", "mtime", "updated", "Last-Modified", "created"):
        mtime_ns = _nanoseconds(info.get(key))
        if mtime_ns:
            break
    if not etag and not mtime_ns:
        return None
    return pb.RemoteObject(url=url, etag=etag, size=int(info.get("size") or 0), mtime_ns=mtime_ns)


def _nanoseconds(value: Any) -> int:
    """A store's timestamp (datetime, epoch seconds, ISO 8601 or HTTP
    date) in nanoseconds since the epoch; 0 when there is none."""
    if value is None or value == "":
        return 0
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp() * 1e6) * 1000
    if isinstance(value, (int, float)):
        return int(value * 1e9)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return _nanoseconds(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
        with contextlib.suppress(TypeError, ValueError):
            return _nanoseconds(email.utils.parsedate_to_datetime(value))
    return 0


def _describe(identity: Any | None) -> str:
    if identity is None:
        return "no version"
    return "%s, %d bytes" % (identity.etag or "modified %d ns" % identity.mtime_ns, identity.size)
