"""The descriptor data path and what it closes (hardening issue, items 1, 2,
5, 6, 7, 8): who may talk to whom, modes of dumped files, no SIGBUS from a
client's file, no path the daemon opens, no leftovers after kill -9.

Every test talks to a real daemon; where the daemon's side is the point,
the test speaks its protocol by hand (raw gRPC plus SCM_RIGHTS)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import joblib
import numpy as np
import pytest

from conftest import Daemon, assert_goes_idle, status
from persistd import dump, load
from persistd._proto import persistd_pb2 as pb
from persistd._proto import persistd_pb2_grpc as pb_grpc
from persistd.descriptors import DescriptorChannel

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _stub(daemon: Daemon) -> pb_grpc.PersistdStub:
    return pb_grpc.PersistdStub(grpc.insecure_channel("unix:" + daemon.socket))


# -- 1. impersonation ---------------------------------------------------------
@pytest.mark.parametrize("problem", ["wide", "symlink"])
def test_client_refuses_a_socket_directory_that_is_not_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    real = tmp_path / "run"
    real.mkdir(mode=0o700)
    where = real
    if problem == "wide":
        real.chmod(0o777)
    else:
        where = tmp_path / "link"
        where.symlink_to(real)
    monkeypatch.setenv("PERSISTD_SOCKET", str(where / "persistd.sock"))
    monkeypatch.setenv("PERSISTD_BIN", "/bin/false")
    with pytest.raises(PermissionError, match="fake daemon"):
        dump(1, tmp_path / "x.pkl")


@root_only
def test_client_refuses_a_socket_directory_of_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)
    monkeypatch.setenv("PERSISTD_SOCKET", str(run / "persistd.sock"))
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        load(__file__)


@pytest.mark.parametrize("mode", [0o755, 0o777])
def test_daemon_refuses_a_socket_directory_that_is_not_private(
    tmp_path: Path, mode: int
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(mode)
    result = subprocess.run(
        [os.environ.get("PERSISTD_BIN") or "bazel-bin/server/persistd",
         "--socket", str(run / "p.sock"), "--store", str(tmp_path / "store")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert "chmod 700" in result.stderr
    assert not (run / "p.sock").exists()


@root_only
def test_client_refuses_a_descriptor_socket_served_by_another_user() -> None:
    """A process of another uid listening where we expect the daemon gets
    nothing: SO_PEERCRED is checked before any descriptor is sent."""
    where = Path(tempfile.mkdtemp(prefix="pdfake"))  # reachable by nobody
    os.chmod(where, 0o777)
    path = str(where / "fake.sock.fds")
    ready = where / "ready"
    fake = subprocess.Popen(
        [sys.executable, "-c",
         "import os, socket, sys, time\n"
         "os.setgid(%d); os.setuid(%d)\n"
         "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n"
         "open(sys.argv[2], 'w').close()\n"
         "c, _ = s.accept(); time.sleep(5)\n" % (NOBODY, NOBODY),
         path, str(ready)],
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(PermissionError, match="uid 65534"):
            DescriptorChannel(path)
    finally:
        fake.kill()
        fake.wait()
        shutil.rmtree(where, ignore_errors=True)


def test_autostart_log_is_not_followed_through_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log of a started daemon is in its store; a symlink planted there
    is refused (O_NOFOLLOW), and the daemon's refusal reaches the caller."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    (run / "persistd.store").mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (run / "persistd.store" / "persistd.log").symlink_to(victim)
    monkeypatch.setenv("PERSISTD_SOCKET", str(run / "persistd.sock"))
    monkeypatch.setenv("PERSISTD_BIN", os.environ.get("PERSISTD_BIN") or "bazel-bin/server/persistd")
    with pytest.raises(OSError, match="persistd.log"):
        dump(1, tmp_path / "x.pkl")
    assert victim.read_text() == "precious\n"


# -- 2. a client's file cannot kill the daemon ---------------------------------
def test_daemon_refuses_an_unsealed_payload(daemon: Daemon, tmp_path: Path) -> None:
    """A payload the daemon maps must be sealed: an unsealed memfd could be
    truncated under the mapping (SIGBUS in the daemon)."""
    payload = os.memfd_create("payload")
    target = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)
    os.write(payload, b"\x80\x04N.")
    channel = DescriptorChannel(daemon.socket + ".fds")
    try:
        token = channel.send([target, payload])
        with pytest.raises(grpc.RpcError) as caught:
            _stub(daemon).Dump(pb.DumpRequest(
                fds_token=token, skeleton=pb.Extent(offset=0, length=4)), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sealed" in caught.value.details()
    finally:
        channel.close()
        os.close(payload)
        os.close(target)
    assert status(daemon.socket) is not None


def test_daemon_refuses_a_target_that_is_not_an_empty_file(daemon: Daemon, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    channel = DescriptorChannel(daemon.socket + ".fds")
    try:
        token = channel.send([write_end])
        with pytest.raises(grpc.RpcError) as caught:
            _stub(daemon).Dump(pb.DumpRequest(
                fds_token=token, payload_inline=b"\x80\x04N.",
                skeleton=pb.Extent(offset=0, length=4)), timeout=10)
        assert "empty regular file" in caught.value.details()
    finally:
        channel.close()
        os.close(read_end)
        os.close(write_end)


def test_unknown_token_is_a_clear_error(daemon: Daemon) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(daemon).Load(pb.LoadRequest(fds_token=os.urandom(16)), timeout=30)
    assert "no descriptors arrived" in caught.value.details()


# -- 5. r+ maps the very file the daemon indexed -------------------------------
def test_r_plus_never_mixes_an_index_with_a_replaced_file(tmp_path: Path) -> None:
    """Another process keeps replacing the file with a differently laid out
    one; every r+ load must see one consistent version."""
    target = tmp_path / "v.pkl"
    versions = []
    for k in range(2):
        head = "x" * (1000 * (k + 1))  # shifts the array's offset
        versions.append((head, np.full(50_000, float(k + 1))))
    dump(versions[0], target)
    stop = threading.Event()

    def replace() -> None:
        k = 0
        while not stop.is_set():
            k ^= 1
            joblib.dump(versions[k], str(target) + ".tmp")
            os.replace(str(target) + ".tmp", target)

    writer = threading.Thread(target=replace)
    writer.start()
    try:
        for _ in range(150):
            head, array = load(target, mmap_mode="r+")
            expected = len(head) / 1000
            assert array[0] == expected and array[-1] == expected
            del array
    finally:
        stop.set()
        writer.join()


# -- 6. modes are the caller's --------------------------------------------------
@pytest.mark.parametrize("compress", [0, 3])
def test_new_file_gets_the_callers_umask(tmp_path: Path, compress: int) -> None:
    old = os.umask(0o077)
    try:
        dump(np.arange(100_000), tmp_path / "a.pkl", compress=compress)
        with open(tmp_path / "b.pkl", "wb"):
            pass  # what open(filename, "wb") gives: joblib's mode
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.pkl").st_mode) == 0o600
    assert os.stat(tmp_path / "a.pkl").st_mode == os.stat(tmp_path / "b.pkl").st_mode


def test_overwrite_keeps_the_old_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.pkl"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    dump({"a": np.arange(10)}, target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert load(target)["a"].sum() == 45


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anything")
def test_read_only_target_is_refused_like_open(tmp_path: Path) -> None:
    target = tmp_path / "ro.pkl"
    target.write_bytes(b"old")
    os.chmod(target, 0o444)
    with pytest.raises(PermissionError):
        dump(1, target)
    assert target.read_bytes() == b"old"


@root_only
def test_root_overwrite_keeps_the_old_owner(tmp_path: Path) -> None:
    target = tmp_path / "a.pkl"
    target.write_bytes(b"old")
    os.chown(target, NOBODY, NOBODY)
    dump(1, target)
    assert (os.stat(target).st_uid, os.stat(target).st_gid) == (NOBODY, NOBODY)


def test_dump_writes_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.pkl"
    real.write_bytes(b"old")
    os.chmod(real, 0o600)
    link = tmp_path / "link.pkl"
    link.symlink_to(real)
    dump([1, 2, 3], link, compress="lz4")
    assert link.is_symlink()
    assert joblib.load(real) == [1, 2, 3]
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600


# -- 7. nothing is left after a client dies mid-dump ---------------------------
@pytest.mark.parametrize("compress", [("gzip", 9), ("xz", 6)])
def test_client_killed_mid_dump_leaves_nothing(
    fresh_daemon: Daemon, tmp_path: Path, compress: tuple[str, int]
) -> None:
    """Nothing beside the target, and the daemon stops working on it: the
    client's descriptor connection closes with the process. xz runs on the
    daemon's workers (--threads), which stop too, mid-block: at preset 6 a
    block is 24 MiB, far more work than the 5 s this test waits."""
    daemon = fresh_daemon
    assert daemon.process is not None
    target = tmp_path / "big.pkl"
    script = (
        "import numpy as np, sys\n"
        "from persistd import dump\n"
        "print('go', flush=True)\n"
        "dump(np.random.random(40_000_000), sys.argv[1], compress=(sys.argv[2], int(sys.argv[3])))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(target), compress[0], str(compress[1])], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    child.stdout.readline()
    time.sleep(1.5)  # pickled, and the daemon is compressing
    child.send_signal(signal.SIGKILL)
    child.wait()
    # The daemon notices the call's cancellation and stops compressing.
    assert_goes_idle(daemon, what="compressing for its dead client")
    assert sorted(os.listdir(tmp_path)) == []
    assert not os.path.exists(os.path.join(daemon.dir, "store", "staging"))
    assert status(daemon.socket) is not None


# -- 8. smaller ----------------------------------------------------------------
def test_loading_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ValueError, match="not a regular file"):
        load(fifo)
    assert time.monotonic() - started < 5


def test_nul_in_a_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="null"):
        dump(1, str(tmp_path / "a\0b"))
    with pytest.raises(ValueError, match="null"):
        load(str(tmp_path / "a\0b"))


def test_small_values_need_no_segment(fresh_daemon: Daemon, tmp_path: Path) -> None:
    """A small file travels inline both ways: no segment, no lease."""
    dump({"a": np.arange(5)}, tmp_path / "s.pkl")
    assert load(tmp_path / "s.pkl")["a"].tolist() == [0, 1, 2, 3, 4]
    reply = status(fresh_daemon.socket)
    assert reply.segments == 0 and reply.leased_segments == 0
    assert reply.loads == 0 or reply.cache_hits == 0


@pytest.mark.parametrize("compress", ["lz4", 3, "zstd"])
def test_dump_warms_the_cache(fresh_daemon: Daemon, tmp_path: Path, compress: object) -> None:
    """The first load of a compressed file this daemon wrote needs no
    decompression: its segment was built while the client published it."""
    value = np.random.random(200_000)
    dump(value, tmp_path / "w.pkl", compress=compress)
    deadline = time.monotonic() + 30
    while status(fresh_daemon.socket).segments == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = status(fresh_daemon.socket)
    np.testing.assert_array_equal(load(tmp_path / "w.pkl"), value)
    after = status(fresh_daemon.socket)
    assert after.cache_hits == before.cache_hits + 1
    assert after.segments == before.segments == 1


def test_descriptor_messages_must_be_tokens(daemon: Daemon) -> None:
    """A client that sends garbage on the descriptor socket is dropped; the
    daemon goes on serving."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket + ".fds")
    sock.sendall(b"x" * 5)
    sock.close()
    assert status(daemon.socket) is not None


def _rss(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_big_requests_are_refused_and_not_retained(fresh_daemon: Daemon) -> None:
    """Requests above 16 MiB are refused; a burst of 15 MB ones does not
    leave the daemon holding their memory."""
    assert fresh_daemon.process is not None
    stub = _stub(fresh_daemon)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Load(pb.LoadRequest(source_inline=b"\0" * (20 << 20)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    before = _rss(fresh_daemon.process.pid)
    futures = [
        stub.Load.future(pb.LoadRequest(source_inline=b"\x80" * (15 << 20)), timeout=60)
        for _ in range(8)
    ]
    for future in futures:
        with pytest.raises(grpc.RpcError):
            future.result()
    time.sleep(0.5)
    assert _rss(fresh_daemon.process.pid) - before < 64 << 20


@pytest.mark.parametrize("flag,synced", [("--fsync", True), ("--no-fsync", False)])
def test_fsync_policy_is_the_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str, synced: bool
) -> None:
    """--fsync makes clients fsync the file before publishing and the
    directory after; the default does neither (as joblib)."""
    from conftest import daemon_binary

    instance = Daemon(daemon_binary(), extra_args=[flag])
    instance.start()
    monkeypatch.setenv("PERSISTD_SOCKET", instance.socket)
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    try:
        assert status(instance.socket).fsync is synced
        for compress in (0, "lz4"):
            dump({"a": np.arange(1000)}, tmp_path / "f.pkl", compress=compress)
            assert load(tmp_path / "f.pkl")["a"].sum() == 499500
        assert len(calls) == (4 if synced else 0)  # file + directory, twice
    finally:
        instance.cleanup()


def test_large_uncompressed_inline_source_gets_a_segment(daemon: Daemon, tmp_path: Path) -> None:
    """An inline source whose result exceeds the inline reply is built where
    segments live (a memfd cannot be linked there: EXDEV before the fix)."""
    target = tmp_path / "big.pkl"
    joblib.dump(np.arange(300_000, dtype=np.float64), target)
    reply = _stub(daemon).Load(
        pb.LoadRequest(source_inline=target.read_bytes()), timeout=60
    )
    assert reply.segment_path and not reply.segment_inline
    assert len(reply.arrays) == 1 and reply.arrays[0].data.length == 2_400_000
