"""N worker processes load the same compressed model: persistd against
joblib, measured in the same run (issue: shared-memory handoff).

    .venv/bin/python bench/shared_model.py [--mb 500] [--workers 4 8]

Workers are forked after the parent used the client (as gunicorn and
multiprocessing pools do). Each loads the model, touches every page, and
reports its load+touch time; while all of them still hold the model, the
parent reads ΣPSS (workers + daemon) from /proc/PID/smaps_rollup.
- cold: the first load of a file the daemon has never seen, written by real
  joblib (zstd: written by persistd, joblib has no zstd); its page cache is
  dropped first.
- warm: the same file again; the daemon's segment is cached.
Needs a running persistd (PERSISTD_SOCKET or the default socket).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import joblib
import numpy as np

import persistd
from persistd import transport
from common import drop_file_cache, pss_bytes, table, touch


def make_model(mb: int) -> dict:
    rng = np.random.default_rng(1)
    n = mb * (1 << 20) // 4
    # Rounded weights compress like real float32 models do (~1.5-3x).
    w = np.round(rng.standard_normal(n - n // 8), 2).astype(np.float32)
    b = np.zeros(n // 8, dtype=np.float32)
    return {"layer0": w[: len(w) // 2], "layer1": w[len(w) // 2:], "bias": b,
            "config": {"name": "bench", "dims": [n]}}


def _worker(loader_name: str, path: str, results, ready, release) -> None:
    loader = LOADERS[loader_name]
    t0 = time.perf_counter()
    obj = loader(path)
    touch(obj)
    results.put((os.getpid(), time.perf_counter() - t0))
    ready.wait()      # hold the model while the parent measures PSS
    release.wait()
    del obj


LOADERS = {
    "persistd": lambda p: persistd.load(p),
    "persistd mmap r": lambda p: persistd.load(p, mmap_mode="r"),
    "joblib": lambda p: joblib.load(p),
    "joblib mmap r": lambda p: joblib.load(p, mmap_mode="r"),
}


def run_pool(loader: str, path: str, workers: int, daemon_pid: int | None) -> tuple[float, float]:
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    ready = ctx.Barrier(workers + 1)
    release = ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=_worker, args=(loader, path, results, ready, release))
             for _ in range(workers)]
    for p in procs:
        p.start()
    times = [results.get(timeout=600)[1] for _ in procs]
    pss = sum(pss_bytes(p.pid) for p in procs)
    if daemon_pid:
        pss += pss_bytes(daemon_pid)
    ready.wait()
    release.wait()
    for p in procs:
        p.join()
    return statistics.median(times), pss


def decoder_floor(path: str, tool: list[str]) -> float | None:
    """Seconds a C command-line decoder needs for `path`, output to a file
    (page cache included), or None if the tool is not installed."""
    if shutil.which(tool[0]) is None:
        return None
    out = path + ".out"
    drop_file_cache(path)
    t0 = time.perf_counter()
    with open(path, "rb") as src, open(out, "wb") as dst:
        subprocess.run(tool, stdin=src, stdout=dst, check=True)
    t = time.perf_counter() - t0
    os.unlink(out)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()

    model = make_model(args.mb)
    size = sum(v.nbytes for v in model.values() if isinstance(v, np.ndarray))
    tmp = tempfile.mkdtemp(prefix="persistd-shared-")
    status = transport.connection().status()
    daemon_pid = status.pid
    rows = []
    try:
        files = {}
        for label, compress, writer in [("lz4", "lz4", joblib.dump),
                                        ("zlib-3", 3, joblib.dump),
                                        ("zstd", "zstd", persistd.dump),
                                        ("none", 0, joblib.dump)]:
            path = os.path.join(tmp, f"model-{label}.pkl")
            writer(model, path, compress=compress)
            files[label] = path
        del model
        # The parent uses the client before forking, like a pool's master.
        persistd.load(files["none"], mmap_mode="r")

        floors = {"lz4": decoder_floor(files["lz4"], ["lz4", "-dc"]),
                  "zlib-3": decoder_floor(files["zlib-3"], ["pigz", "-dcz"]),
                  "zstd": decoder_floor(files["zstd"], ["zstd", "-dc"])}
        for n in args.workers:
            for label in ["lz4", "zlib-3", "zstd"]:
                # cold: a fresh copy (new inode) the daemon has never seen
                fresh = files[label] + f".cold{n}"
                shutil.copyfile(files[label], fresh)
                drop_file_cache(fresh)
                t_cold, pss_cold = run_pool("persistd", fresh, n, daemon_pid)
                t_warm, pss_warm = run_pool("persistd", fresh, n, daemon_pid)
                floor = floors[label]
                rows.append([n, f"persistd {label}", f"{t_cold:.2f}", f"{pss_cold / size:.2f}",
                             f"{t_warm:.3f}", f"{pss_warm / size:.2f}",
                             f"{floor:.2f}" if floor else "n/a"])
                if label != "zstd":
                    drop_file_cache(files[label])
                    t_j, pss_j = run_pool("joblib", files[label], n, None)
                    rows.append([n, f"joblib {label}", f"{t_j:.2f}", f"{pss_j / size:.2f}",
                                 "-", "-", "-"])
                os.unlink(fresh)
            t_m, pss_m = run_pool("joblib mmap r", files["none"], n, None)
            rows.append([n, "joblib none mmap_mode='r'", f"{t_m:.3f}", f"{pss_m / size:.2f}", "-", "-", "-"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model: {size / (1 << 20):.0f} MiB float32; per-worker median load+touch seconds; "
          "ΣPSS (workers + daemon) as a multiple of the model size")
    print(table(["workers", "loader", "cold s", "cold ΣPSS/size", "warm s",
                 "warm ΣPSS/size", "C decoder floor s"], rows))


if __name__ == "__main__":
    main()
