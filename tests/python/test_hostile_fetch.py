"""A hostile or broken client against the object-store fetch protocol.

A fetch ticket makes one client the feeder of a segment every process on
the node may wait for, so what that client sends is untrusted input like a
file: a ticket it does not hold, a staging descriptor of the wrong size or
without seals, a ready count past the object. Each must be refused or fail
the build with a clear error, leave no segment, and leave the daemon
serving. Raw RPCs, as a client of its own would send them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from conftest import Daemon, status
from persistd._proto import persistd_pb2 as pb
from persistd._proto import persistd_pb2_grpc as pb_grpc
from persistd.descriptors import DescriptorChannel
from persistd.files import STREAM_HEADER_BYTES, memory_file, seal

SIZE = 4096


class RawClient:
    """One session, and the descriptor socket, with nothing of persistd's
    client logic in between."""

    def __init__(self, socket: str) -> None:
        self.channel = grpc.insecure_channel("unix:" + socket)
        self.stub = pb_grpc.PersistdStub(self.channel)
        self.attach = self.stub.Attach(pb.AttachRequest(pid=os.getpid(), client="hostile"))
        self.session = next(self.attach).session_id
        self.fds = DescriptorChannel(socket + ".fds")

    def claim(self, url: str) -> str:
        remote = pb.RemoteObject(url=url, etag="e1", size=SIZE)
        reply = self.stub.Load(pb.LoadRequest(session_id=self.session, remote=remote), timeout=10)
        assert reply.fetch_ticket, "the first load of a new object is its fetcher"
        return str(reply.fetch_ticket)

    def redeem(self, ticket: str, fd: int, url: str, streamed: bool = True) -> Any:
        request = pb.LoadRequest(
            session_id=self.session, fds_token=self.fds.send([fd]), fetch_ticket=ticket,
            fetch_streamed=streamed, display_name=url,
        )
        return self.stub.Load(request, timeout=30)

    def close(self) -> None:
        self.attach.cancel()
        self.channel.close()


@pytest.fixture
def clients(daemon: Daemon) -> Iterator[tuple[RawClient, RawClient]]:
    a, b = RawClient(daemon.socket), RawClient(daemon.socket)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def staging(size: int, *, sealed: bool = True, ready: int = 0) -> int:
    fd = memory_file("hostile-staging", size)
    os.pwrite(fd, struct.pack("<Q", ready), 0)
    if sealed:
        seal(fd, writable=True)
    return fd


def refused(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[no-any-return]


def assert_nothing_cached(daemon: Daemon, url: str) -> None:
    reply = status(daemon.socket)
    assert reply is not None, "the daemon died"
    channel = grpc.insecure_channel("unix:" + daemon.socket)
    listed = pb_grpc.PersistdStub(channel).ListSegments(pb.ListSegmentsRequest(), timeout=10)
    channel.close()
    assert url not in [s.source_path for s in listed.segments]


def test_a_ticket_is_its_sessions_alone(daemon: Daemon, clients: tuple[RawClient, RawClient]) -> None:
    a, b = clients
    url = "s3://hostile/stolen"
    ticket = a.claim(url)
    fd = staging(STREAM_HEADER_BYTES + SIZE)
    try:
        assert refused(lambda: b.redeem(ticket, fd, url)) == grpc.StatusCode.ABORTED
        assert refused(lambda: b.redeem("no-such-ticket", fd, url)) == grpc.StatusCode.ABORTED
    finally:
        os.close(fd)
    assert_nothing_cached(daemon, url)


@pytest.mark.parametrize("size,sealed", [(STREAM_HEADER_BYTES + SIZE - 1, True),
                                         (STREAM_HEADER_BYTES + SIZE + 4096, True),
                                         (STREAM_HEADER_BYTES + SIZE, False)])
def test_a_staging_file_of_the_wrong_size_or_unsealed_is_refused(
    daemon: Daemon, clients: tuple[RawClient, RawClient], size: int, sealed: bool
) -> None:
    a, _ = clients
    url = "s3://hostile/staging-%d-%s" % (size, sealed)
    ticket = a.claim(url)
    fd = staging(size, sealed=sealed, ready=size)
    try:
        assert refused(lambda: a.redeem(ticket, fd, url)) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        os.close(fd)
    assert_nothing_cached(daemon, url)


def test_a_ready_count_past_the_object_reads_nothing_beyond_it(
    daemon: Daemon, clients: tuple[RawClient, RawClient]
) -> None:
    """The count claims bytes the staging file does not have; the object's
    bytes (zeros: no joblib file) fail the build, and nothing is kept."""
    a, _ = clients
    url = "s3://hostile/overclaimed"
    ticket = a.claim(url)
    fd = staging(STREAM_HEADER_BYTES + SIZE, ready=1 << 62)
    try:
        with pytest.raises(grpc.RpcError) as info:
            a.redeem(ticket, fd, url)
        assert info.value.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert url in str(info.value.details()), info.value.details()
    finally:
        os.close(fd)
    assert_nothing_cached(daemon, url)
