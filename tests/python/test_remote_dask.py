"""deploy/dask_example.py, small: Dask workers on two nodes load one model
URL from the local S3 server; each node fetches it once (GETs counted on
the server's side, per node), joblib through fsspec once per worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, daemon_binary

pytest.importorskip("distributed")
pytest.importorskip("sklearn")
pytest.importorskip("s3fs")
pytest.importorskip("moto")


def test_dask_example_fetches_once_per_node() -> None:
    workers = 2
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "dask_example.py"),
         "--rows", "20000", "--workers-per-node", str(workers)],
        env=dict(os.environ, PERSISTD_BIN=daemon_binary()),
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    ours = [r for r in rows if r[:1] == ["persistd.load(url)"]]
    theirs = [r for r in rows if r[:1] == ["joblib.load(fsspec)"]]
    # columns: load, node, GETs, MB from S3, fetches/node (object bytes
    # served / object size), median s, ΣPSS / model
    assert [(r[1], r[2], r[4]) for r in ours] == [("0", "1", "1.0"), ("1", "1", "1.0")], run.stdout
    assert [r[1] for r in theirs] == ["0", "1"], run.stdout
    assert all(float(r[4]) >= workers for r in theirs), run.stdout
