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
Each case runs --repeat times (cold: on a new copy each time) and the median
run is reported: on a VM whose host backs guest memory lazily, whichever run
first touches memory that sat free for a while pays for it, several times
the cost of decoding lz4. ΣPSS is also shown minus the same processes' ΣPSS
just before they loaded. The C decoder floors need lz4, pigz and zstd
(apt-get install lz4 pigz zstd; "n/a" without them).
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
from persistd import paths
from persistd._proto import persistd_pb2 as pb
from persistd._proto import persistd_pb2_grpc as pb_grpc
from common import drop_file_cache, pss_bytes, table, touch


def daemon_status():
    """The daemon's Status reply (pid, cache counters), on a channel of its
    own: the client library has no public status call."""
    import grpc

    with grpc.insecure_channel("unix:" + paths.socket_path()) as channel:
        return pb_grpc.PersistdStub(channel).Status(pb.StatusRequest(), timeout=5)


def make_model(mb: int) -> dict:
    rng = np.random.default_rng(1)
    n = mb * (1 << 20) // 4
    # Rounded weights compress like real float32 models do (~1.5-3x).
    w = np.round(rng.standard_normal(n - n // 8), 2).astype(np.float32)
    b = np.zeros(n // 8, dtype=np.float32)
    return {"layer0": w[: len(w) // 2], "layer1": w[len(w) // 2:], "bias": b,
            "config": {"name": "bench", "dims": [n]}}


def _worker(loader_name: str, path: str, results, go, ready, release) -> None:
    loader = LOADERS[loader_name]
    go.wait()         # the parent has measured the baseline PSS
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


def run_pool(loader: str, path: str, workers: int, daemon_pid: int | None) -> tuple[float, float, float]:
    """Median per-worker load+touch seconds, ΣPSS (workers + daemon) while
    all hold the model, and the part of it that the load added (ΣPSS minus
    the same processes' ΣPSS just before they loaded)."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    go = ctx.Event()
    ready = ctx.Barrier(workers + 1)
    release = ctx.Barrier(workers + 1)
    procs = [ctx.Process(target=_worker, args=(loader, path, results, go, ready, release))
             for _ in range(workers)]
    for p in procs:
        p.start()
    pids = [p.pid for p in procs] + ([daemon_pid] if daemon_pid else [])
    time.sleep(0.3)  # forked and waiting
    base = sum(pss_bytes(pid) for pid in pids)
    go.set()
    times = [results.get(timeout=600)[1] for _ in procs]
    pss = sum(pss_bytes(pid) for pid in pids)
    ready.wait()
    release.wait()
    for p in procs:
        p.join()
    return statistics.median(times), pss, pss - base


def run_pools(loader: str, path: str, workers: int, daemon_pid: int | None,
              repeat: int) -> tuple[float, float, float]:
    """run_pool `repeat` times (warm cases): the run with the median time."""
    runs = sorted(run_pool(loader, path, workers, daemon_pid) for _ in range(repeat))
    return runs[len(runs) // 2]


def decoder_floor(path: str, tool: list[str], repeat: int = 3) -> tuple[float, float] | None:
    """Median seconds a C command-line decoder needs for `path` (its page
    cache dropped first, like the cold loads), output to a new file in the
    page cache; None if the tool is not installed (apt-get install lz4 pigz
    zstd). Two numbers: with every output kept until all runs are done (new
    memory each run, as a daemon segment that stays cached gets: the one
    the targets use), and with each output deleted before the next run
    (which then reuses the memory just freed: on a VM whose host backs
    guest memory lazily that is several times cheaper)."""
    if shutil.which(tool[0]) is None:
        return None
    result = []
    for keep in (True, False):
        times, outs = [], []
        for i in range(repeat):
            out = f"{path}.out{i}"
            os.sync()
            drop_file_cache(path)
            t0 = time.perf_counter()
            with open(path, "rb") as src, open(out, "wb") as dst:
                subprocess.run(tool, stdin=src, stdout=dst, check=True)
            times.append(time.perf_counter() - t0)
            outs.append(out)
            if not keep:
                os.unlink(out)
        if keep:
            for out in outs:
                os.unlink(out)
        result.append(statistics.median(times))
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each case (cold: each on a new copy of the file)")
    args = parser.parse_args()

    model = make_model(args.mb)
    size = sum(v.nbytes for v in model.values() if isinstance(v, np.ndarray))
    tmp = tempfile.mkdtemp(prefix="persistd-shared-")
    daemon_pid = daemon_status().pid
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

        os.sync()
        floors = {"lz4": decoder_floor(files["lz4"], ["lz4", "-dc"]),
                  "zlib-3": decoder_floor(files["zlib-3"], ["pigz", "-dcz"]),
                  "zstd": decoder_floor(files["zstd"], ["zstd", "-dc"])}
        for n in args.workers:
            # joblib's best case first: an uncompressed file, memory-mapped.
            t_m, pss_m, d_m = run_pools("joblib mmap r", files["none"], n, None, args.repeat)
            for label in ["lz4", "zlib-3", "zstd"]:
                # cold: a fresh copy (new inode) the daemon has never seen,
                # not in the page cache, no writeback in progress
                colds = []
                for i in range(args.repeat):
                    fresh = files[label] + f".cold{n}-{i}"
                    shutil.copyfile(files[label], fresh)
                    os.sync()
                    drop_file_cache(fresh)
                    colds.append(run_pool("persistd", fresh, n, daemon_pid))
                    if i + 1 < args.repeat:
                        os.unlink(fresh)
                t_cold, pss_cold, d_cold = sorted(colds)[len(colds) // 2]
                # warm: the last copy again, its segment cached
                t_warm, pss_warm, d_warm = run_pools("persistd", fresh, n, daemon_pid, args.repeat)
                floor = floors[label][0] if floors[label] else None
                rows.append([n, f"persistd {label}", f"{t_cold:.2f}",
                             f"{pss_cold / size:.2f} ({d_cold / size:.2f})",
                             f"{t_warm:.3f}", f"{pss_warm / size:.2f} ({d_warm / size:.2f})",
                             f"{floor:.2f}" if floor else "n/a",
                             f"{t_cold / floor:.2f}" if floor else "n/a",
                             f"{t_warm / t_m:.2f}"])
                if label != "zstd":
                    joblibs = []
                    for _ in range(args.repeat):
                        os.sync()
                        drop_file_cache(files[label])
                        joblibs.append(run_pool("joblib", files[label], n, None))
                    t_j, pss_j, d_j = sorted(joblibs)[len(joblibs) // 2]
                    rows.append([n, f"joblib {label}", f"{t_j:.2f}",
                                 f"{pss_j / size:.2f} ({d_j / size:.2f})",
                                 "-", "-", "-", "-", "-"])
                os.unlink(fresh)
            rows.append([n, "joblib none mmap_mode='r'", "-", "-", f"{t_m:.3f}",
                         f"{pss_m / size:.2f} ({d_m / size:.2f})", "-", "-", "1.00"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model: {size / (1 << 20):.0f} MiB float32; per-worker median load+touch seconds "
          f"(median of {args.repeat} runs); ΣPSS (workers + daemon) as a multiple of "
          "the model size, in parentheses the part the load added; targets: cold/floor <= 1.3, "
          "warm/joblib-mmap <= 1.2, ΣPSS/size <= 1.15")
    print(table(["workers", "loader", "cold s", "cold ΣPSS/size", "warm s",
                 "warm ΣPSS/size", "C decoder floor s", "cold/floor", "warm/joblib-mmap"], rows))
    print("C decoder floors (output kept / output deleted between runs): " + ", ".join(
        f"{label} {f[0]:.2f} / {f[1]:.2f} s" if f else f"{label} n/a" for label, f in floors.items()))


if __name__ == "__main__":
    main()
