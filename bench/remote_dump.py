"""Dumps and loads to S3 (moto's server on loopback), same run, same value:

- persistd.dump(value, url): the upload of each part runs while the daemon
  compresses the next one, against the same dump with the upload after the
  compression (``appends=False``), and joblib.dump into an fsspec file;
- the first load on a node (one fetch, decompressed as ranges arrive) and
  a second one (a hit: no GET), against joblib.load of an fsspec file.

    .venv/bin/python bench/remote_dump.py [--mb 200] [--compress lz4]

Loopback S3 is faster than a real store and moto spends CPU of its own,
so the absolute numbers are this machine's; the ratios are same-run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "deploy"))
from local_s3 import LocalS3  # noqa: E402


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--compress", default="lz4")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import fsspec
    import joblib

    import persistd
    from persistd import admin, remote

    rng = np.random.default_rng(0)
    value = {"w": np.round(rng.standard_normal(args.mb * 2**20 // 4), 2).astype(np.float32)}
    compress = args.compress
    with LocalS3() as s3, tempfile.TemporaryDirectory() as tmp:
        # A daemon of its own (started on demand, stopped at the end).
        os.environ["PERSISTD_SOCKET"] = os.path.join(tmp, "persistd.sock")
        s3.fs.mkdir("bench")
        persistd.dump({"warm": 1}, "s3://bench/warmup.pkl")  # daemon, imports, s3 client

        sequential = remote.dump
        def dump_sequential() -> None:
            def no_overlap(*a: Any, **k: Any) -> str:
                k["appends"] = False
                return sequential(*a, **k)
            remote.dump = no_overlap  # type: ignore[assignment]
            try:
                persistd.dump(value, "s3://bench/seq.pkl", compress=compress)
            finally:
                remote.dump = sequential  # type: ignore[assignment]

        def joblib_dump() -> None:
            with fsspec.open("s3://bench/joblib.pkl", "wb") as f:
                joblib.dump(value, f, compress=compress)

        def joblib_load() -> None:
            with fsspec.open("s3://bench/joblib.pkl", "rb") as f:
                joblib.load(f)

        rows: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            rows.setdefault("persistd dump (upload overlaps compression)", []).append(
                timed(lambda: persistd.dump(value, "s3://bench/p.pkl", compress=compress)))
            rows.setdefault("persistd dump (upload after compression)", []).append(
                timed(dump_sequential))
            rows.setdefault("joblib.dump into fsspec file", []).append(timed(joblib_dump))
            admin.evict(sources=["s3://bench/p.pkl"])
            rows.setdefault("persistd first load on the node (fetch)", []).append(
                timed(lambda: persistd.load("s3://bench/p.pkl")))
            rows.setdefault("persistd second load (hit, no GET)", []).append(
                timed(lambda: persistd.load("s3://bench/p.pkl")))
            rows.setdefault("joblib.load of fsspec file", []).append(timed(joblib_load))
        print("value %d MB float32, compress=%s, best of %d, load average %.2f"
              % (args.mb * 2**20 // 10**6, compress, args.repeat, os.getloadavg()[0]))
        for name, times in rows.items():
            print("%-46s %8.3f s" % (name, min(times)))
        admin.stop()


if __name__ == "__main__":
    main()
