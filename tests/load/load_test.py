"""Load test: many client processes hammering one daemon with mixed dumps
and loads, to show it stays correct, bounded and leak-free under pressure.

    .venv/bin/python tests/load/load_test.py [--procs 16] [--seconds 60]

Starts its own persistd (private socket, store, --cache-bytes budget),
runs the workers, samples the daemon's RSS, open descriptors and cache use
every half second, and prints errors, throughput and those peaks. Every
load is checked against the value its file was written with (each file's
name carries the seed that made it), so a wrong byte is an error too.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CODECS: list[Any] = [0, 0, 3, "lz4", "zstd", ("gzip", 1)]
SIZES = [100, 10_000, 300_000, 3_000_000]  # float64 elements: 0.8 KB .. 24 MB


def value_for(seed: int, size: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {"seed": seed, "w": rng.standard_normal(size), "i": np.arange(size % 977)}


def worker(index: int, data: str, seconds: float, out: Any) -> None:
    from persistd import dump, load

    rng = random.Random(index)
    stats = {"dumps": 0, "loads": 0, "errors": 0, "bytes": 0, "messages": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if rng.random() < 0.3:
                seed, size = rng.randrange(10_000), rng.choice(SIZES)
                codec = rng.choice(CODECS)
                name = os.path.join(data, "f%02d-%d-%d.pkl" % (rng.randrange(40), seed, size))
                dump(value_for(seed, size), name, compress=codec)
                stats["dumps"] += 1
            else:
                names = os.listdir(data)
                names = [n for n in names if n.endswith(".pkl")]
                if not names:
                    continue
                name = rng.choice(names)
                _, seed, size = name[:-4].split("-")
                mode = rng.choice([None, None, "r", "c"])
                try:
                    got = load(os.path.join(data, name), mmap_mode=mode)
                except FileNotFoundError:
                    continue  # replaced name raced with listdir: fine
                expected = value_for(int(seed), int(size))
                if got["seed"] != expected["seed"] or not np.array_equal(got["w"], expected["w"]):
                    raise AssertionError("wrong data in %s" % name)
                stats["loads"] += 1
                stats["bytes"] += got["w"].nbytes
                del got
        except Exception as exc:  # counted and reported, never hidden
            stats["errors"] += 1
            if len(stats["messages"]) < 5:
                stats["messages"].append("%s: %s" % (type(exc).__name__, exc))
    out.put(stats)


def sample(pid: int) -> tuple[int, int]:
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--cache-mb", type=int, default=256)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="pdload")
    socket = os.path.join(work, "persistd.sock")
    data = os.path.join(work, "data")
    os.mkdir(data)
    binary = os.environ.get("PERSISTD_BIN") or str(REPO / "bazel-bin/server/persistd")
    daemon = subprocess.Popen(
        [binary, "--socket", socket, "--store", os.path.join(work, "store"),
         "--cache-bytes", "%dM" % args.cache_mb],
        stderr=open(os.path.join(work, "persistd.log"), "wb"),
    )
    os.environ["PERSISTD_SOCKET"] = socket
    try:
        from persistd import transport
        from persistd._proto import persistd_pb2 as pb

        for _ in range(100):
            if os.path.exists(socket + ".fds"):
                break
            time.sleep(0.05)
        rss0, fds0 = sample(daemon.pid)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(i, data, args.seconds, queue)) for i in range(args.procs)]
        started = time.monotonic()
        for p in procs:
            p.start()
        peak_rss, peak_fds, peak_cache, budget = rss0, fds0, 0, 0
        while any(p.is_alive() for p in procs):
            rss, fds = sample(daemon.pid)
            reply = transport.call("Status", pb.StatusRequest(), timeout=10)
            peak_rss, peak_fds = max(peak_rss, rss), max(peak_fds, fds)
            peak_cache, budget = max(peak_cache, reply.cache_bytes), reply.cache_budget_bytes
            time.sleep(0.5)
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # sessions of exited workers close
        rss1, fds1 = sample(daemon.pid)
        final = transport.call("Status", pb.StatusRequest(), timeout=10)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    dumps = sum(r["dumps"] for r in results)
    loads = sum(r["loads"] for r in results)
    errors = sum(r["errors"] for r in results)
    mb = sum(r["bytes"] for r in results) / 1e6
    print("| %d processes x %.0f s | value |" % (args.procs, args.seconds))
    print("| --- | --- |")
    print("| dumps / loads | %d / %d (%.0f ops/s) |" % (dumps, loads, (dumps + loads) / elapsed))
    print("| array data loaded | %.0f MB (%.0f MB/s) |" % (mb, mb / elapsed))
    print("| errors | %d |" % errors)
    print("| daemon RSS start / peak / end | %.0f / %.0f / %.0f MB |" % (rss0 / 1e6, peak_rss / 1e6, rss1 / 1e6))
    print("| daemon fds start / peak / end | %d / %d / %d |" % (fds0, peak_fds, fds1))
    print("| cache peak / budget | %.0f / %.0f MB |" % (peak_cache / 1e6, budget / 1e6))
    print("| segments / leased at end | %d / %d |" % (final.segments, final.leased_segments))
    print("| daemon exit code | %s |" % daemon.returncode)
    for r in results:
        for message in r["messages"]:
            print("error:", message)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors or daemon.returncode != 0 else 0)


if __name__ == "__main__":
    main()
