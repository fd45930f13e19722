"""Object-store URLs against a real S3 server on loopback (moto's server,
s3fs as the client), GETs counted on the server's side (deploy/local_s3.py).

Each node is a real daemon with its own store and socket; worker processes
reach their node through $PERSISTD_SOCKET. Objects up to fetch.CHUNK_BYTES
cost one GET per fetch, so GET counts are fetch counts.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

import persistd
from persistd import admin, fetch

from conftest import REPO_ROOT, Daemon, daemon_binary

pytest.importorskip("s3fs")
pytest.importorskip("moto")
sys.path.insert(0, str(REPO_ROOT / "deploy"))
from local_s3 import LocalS3  # noqa: E402

BUCKET = "persistd-test"
CODECS = [0, "zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"]


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with LocalS3() as server:
        server.fs.mkdir(BUCKET)
        yield server


@pytest.fixture
def nodes() -> Iterator[list[Daemon]]:
    """Two "nodes": daemons with their own stores and sockets."""
    started = [Daemon(daemon_binary()), Daemon(daemon_binary())]
    try:
        for node in started:
            node.start()
        yield started
    finally:
        for node in started:
            node.cleanup()


def value(seed: int = 0, n: int = 50_000) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal(n),
        "ints": np.arange(n // 10, dtype=np.int32),
        "name": "model-%d" % seed,
        "nested": [np.ones((3, 4)), {"b": np.zeros(5, dtype=np.uint8)}],
    }


def assert_equal(got: Any, want: Any) -> None:
    assert got["name"] == want["name"]
    np.testing.assert_array_equal(got["w"], want["w"])
    np.testing.assert_array_equal(got["ints"], want["ints"])
    np.testing.assert_array_equal(got["nested"][0], want["nested"][0])
    np.testing.assert_array_equal(got["nested"][1]["b"], want["nested"][1]["b"])


def put_joblib(s3: LocalS3, key: str, obj: Any, tmp_path: Path, compress: Any = 3) -> str:
    """Upload a file written by real joblib (no node has seen it)."""
    local = tmp_path / key.replace("/", "_")
    joblib.dump(obj, local, compress=compress)
    s3.fs.put(str(local), "%s/%s" % (BUCKET, key))
    return "s3://%s/%s" % (BUCKET, key)


def segments_of(url: str, socket: str | None = None) -> list[dict[str, Any]]:
    return [s for s in admin.list_segments(socket) if s.get("source_path") == url]


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_every_codec_dump_warms_the_node(s3: LocalS3, codec: Any) -> None:
    key = "codec-%s.pkl" % codec
    url = "s3://%s/%s" % (BUCKET, key)
    want = value(seed=len(str(codec)))
    assert persistd.dump(want, url, compress=codec) == url
    assert_equal(persistd.load(url), want)
    # The dump warmed this node's cache under the uploaded object's
    # identity: the load needed no GET.
    assert s3.gets("%s/%s" % (BUCKET, key)) == 0
    if codec == "zstd":
        return  # joblib has no zstd
    # Real joblib reads what was uploaded.
    with s3.fs.open("%s/%s" % (BUCKET, key), "rb") as f:
        assert_equal(joblib.load(io.BytesIO(f.read())), want)


def test_loads_a_joblib_file_once_and_maps_it(s3: LocalS3, tmp_path: Path) -> None:
    want = value(seed=7)
    url = put_joblib(s3, "joblib-zlib.pkl", want, tmp_path)
    got = persistd.load(url, mmap_mode="r")
    assert isinstance(got["w"], np.memmap)
    assert_equal(got, want)
    assert_equal(persistd.load(url), want)
    assert s3.gets("%s/joblib-zlib.pkl" % BUCKET) == 1  # the second was a hit


def test_changed_object_gets_a_new_segment(s3: LocalS3, tmp_path: Path) -> None:
    key = "changing.pkl"
    url = put_joblib(s3, key, value(seed=1), tmp_path)
    assert_equal(persistd.load(url), value(seed=1))
    [first] = segments_of(url)
    put_joblib(s3, key, value(seed=2), tmp_path)
    assert_equal(persistd.load(url), value(seed=2))
    assert s3.gets("%s/%s" % (BUCKET, key)) == 2
    current = [s for s in segments_of(url) if s.get("current")]
    assert len(current) == 1 and current[0]["generation"] != first["generation"]


_WORKER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np, persistd
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.005)
    v = persistd.load(sys.argv[1])
    print(float(v["w"].sum()), v["name"])
    """
)


def _spawn_workers(url: str, sockets: list[str], go: Path) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, str(go)],
            env=dict(os.environ, PERSISTD_SOCKET=socket),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for socket in sockets
    ]


def test_eight_processes_on_two_nodes_fetch_twice(
    s3: LocalS3, nodes: list[Daemon], tmp_path: Path
) -> None:
    want = value(seed=3)
    url = put_joblib(s3, "shared.pkl", want, tmp_path, compress="lz4")
    go = tmp_path / "go"
    workers = _spawn_workers(url, [n.socket for n in nodes for _ in range(4)], go)
    go.touch()  # all at once
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert out.split() == [str(float(want["w"].sum())), want["name"]]
    assert s3.gets("%s/shared.pkl" % BUCKET) == 2  # one fetch per node
    for node in nodes:
        [segment] = segments_of(url, node.socket)
        assert segment["current"]


def test_fetcher_killed_mid_download_hands_over(
    s3: LocalS3, nodes: list[Daemon], tmp_path: Path
) -> None:
    """A fetcher that dies leaves no segment; the next load fetches again."""
    want = value(seed=4)
    key = "%s/handover.pkl" % BUCKET
    url = put_joblib(s3, "handover.pkl", want, tmp_path)
    arrived, release = threading.Event(), threading.Event()

    def stall_first(requested: str, _range: str) -> None:
        if requested == key and not arrived.is_set():
            arrived.set()
            release.wait(60)

    s3.before_get = stall_first
    go = tmp_path / "go"
    go.touch()
    try:
        [first] = _spawn_workers(url, [nodes[0].socket], go)
        assert arrived.wait(60), first.stderr.read() if first.poll() is not None else ""
        [second] = _spawn_workers(url, [nodes[0].socket], go)
        first.send_signal(signal.SIGKILL)
        first.wait()
        out, err = second.communicate(timeout=120)
    finally:
        release.set()
        s3.before_get = None
    assert second.returncode == 0, err
    assert out.split() == [str(float(want["w"].sum())), want["name"]]
    assert s3.gets(key) == 2
    assert len(segments_of(url, nodes[0].socket)) == 1


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_object_damaged_mid_download(
    s3: LocalS3, damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(fetch, "PARALLEL", 2)
    key = "%s/damaged-%s.pkl" % (BUCKET, damage)
    url = put_joblib(s3, "damaged-%s.pkl" % damage, value(seed=5, n=200_000), tmp_path, 0)
    size = s3.fs.info(key)["size"]
    data = s3.fs.cat_file(key)

    def damage_it(requested: str, byte_range: str) -> None:
        # Before the first range past the object's first chunk is served.
        if requested == key and byte_range and not byte_range.startswith("bytes=0-"):
            s3.before_get = None
            if damage == "deleted":
                s3.fs.rm(key)
            else:
                s3.fs.pipe(key, data[: size // 2])

    s3.before_get = damage_it
    try:
        if damage == "deleted":
            with pytest.raises(FileNotFoundError, match="deleted while persistd fetched it"):
                persistd.load(url)
        else:
            with pytest.raises(OSError, match="changed while persistd fetched it"):
                persistd.load(url)
    finally:
        s3.before_get = None
    assert segments_of(url) == []
    # Whatever is there now loads (or is missing) like a new object.
    if damage == "deleted":
        with pytest.raises(FileNotFoundError):
            persistd.load(url)


def test_missing_bucket_or_key(s3: LocalS3) -> None:
    with pytest.raises(FileNotFoundError):
        persistd.load("s3://%s/no-such-key.pkl" % BUCKET)
    with pytest.raises(FileNotFoundError):
        persistd.load("s3://no-such-bucket-persistd/model.pkl")


def test_memory_round_trip() -> None:
    want = value(seed=6)
    persistd.dump(want, "memory://persistd/model.pkl", compress="lz4")
    assert_equal(persistd.load("memory://persistd/model.pkl"), want)
    assert_equal(persistd.load("memory://persistd/model.pkl", mmap_mode="c"), want)


def test_r_plus_on_a_url_is_refused() -> None:
    persistd.dump(value(), "memory://persistd/rplus.pkl")
    with pytest.raises(ValueError, match="mmap_mode 'r\\+'"):
        persistd.load("memory://persistd/rplus.pkl", mmap_mode="r+")


def test_without_fsspec_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    with pytest.raises(ImportError, match=r"pip install persistd\[fsspec\]"):
        persistd.load("s3://%s/anything.pkl" % BUCKET)


def test_secrets_in_a_url_never_reach_the_daemon(daemon: Daemon) -> None:
    """A presigned URL's signature (or a password) is not the daemon's to
    log or list: it keys the object by a digest of the query instead."""
    url = "memory://persistd/signed.pkl?X-Amz-Signature=topsecret"
    want = value(seed=8)
    persistd.dump(want, url, compress="lz4")
    assert_equal(persistd.load(url), want)
    other = "memory://persistd/signed.pkl?X-Amz-Signature=another"
    persistd.dump(value(seed=9), other, compress="lz4")
    assert_equal(persistd.load(other), value(seed=9))  # not the first one's segment
    listed = [s["source_path"] for s in admin.list_segments() if "signed.pkl" in s["source_path"]]
    assert len(listed) == 2 and not any("secret" in p or "another" in p for p in listed)
    assert "topsecret" not in daemon.log()


@pytest.mark.parametrize("compress", [0, "lz4"])
def test_a_failed_dump_uploads_nothing(s3: LocalS3, compress: Any) -> None:
    """The compressed upload runs while the daemon writes: a dump that
    fails leaves no object (and an overwrite leaves the old one)."""
    key = "%s/failed-%s.pkl" % (BUCKET, compress)
    url = "s3://" + key
    with pytest.raises(Exception):
        persistd.dump({"w": np.ones(300_000), "f": lambda: 0}, url, compress=compress)
    assert not s3.fs.exists(key)
    persistd.dump(value(seed=10), url, compress=compress)
    with pytest.raises(Exception):
        persistd.dump({"w": np.ones(300_000), "f": lambda: 0}, url, compress=compress)
    s3.fs.invalidate_cache()
    assert_equal(persistd.load(url), value(seed=10))


def test_http_urls_load_and_are_read_only(s3: LocalS3, tmp_path: Path) -> None:
    """http(s): the same fetch (ranged GETs, keyed by the ETag the server
    sends); a dump to one is refused."""
    want = value(seed=11)
    put_joblib(s3, "public.pkl", want, tmp_path)
    s3.fs.chmod("%s/public.pkl" % BUCKET, acl="public-read")
    url = "%s/%s/public.pkl" % (s3.endpoint, BUCKET)
    assert_equal(persistd.load(url), want)
    assert_equal(persistd.load(url, mmap_mode="r"), want)
    assert s3.gets("%s/public.pkl" % BUCKET) == 1
    with pytest.raises(ValueError, match="read-only"):
        persistd.dump(want, url)
