"""Dask workers on two "nodes" serve one model from S3: persistd vs joblib.

A training job uploaded a model (a scikit-learn nearest-neighbour
regressor: its training set is its weights) to an object store, here a
real S3 server on loopback (moto's, deploy/local_s3.py), as joblib wrote
it. A Dask ``LocalCluster`` runs several worker processes per node; each
node is one persistd daemon with its own store and socket, and its workers
reach it through $PERSISTD_SOCKET (and reach S3 through their node's own
endpoint, so GETs are counted per node). Every worker loads the model from
its URL, keeps it, and predicts.

Printed per node, for ``persistd.load(url)`` and for plain
``joblib.load`` of an fsspec file (what users write today): the GETs the
store served, the median load time, and ΣPSS: what the loads added to the
proportional set size of the node's workers and daemon, over the model's
in-memory size (1.0 = one copy per node).

    .venv/bin/python deploy/dask_example.py               # ~100 MB model
    .venv/bin/python deploy/dask_example.py --rows 20000  # small (the test)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from local_s3 import LocalS3  # noqa: E402

URL = "s3://models/knn.pkl"
KEY = "models/knn.pkl"
#: A tiny model every worker loads both ways first, so that imports,
#: store clients and daemon sessions are not counted against either.
WARMUP_URL = "s3://models/warmup.pkl"
_MODEL: Any = None  # the model a worker serves (module global of the worker)


# -- what the workers run ----------------------------------------------------------
def serve(url: str, how: str, queries: np.ndarray) -> tuple[float, float]:
    """Load the model as ``how`` says, keep it, predict: (load s, checksum)."""
    global _MODEL
    started = time.perf_counter()
    if how == "persistd":
        import persistd

        model = persistd.load(url)
    else:
        import fsspec
        import joblib

        with fsspec.open(url, "rb") as f:
            model = joblib.load(f)
    seconds = time.perf_counter() - started
    _MODEL = model
    return seconds, float(np.asarray(model.predict(queries)).sum())


def forget() -> None:
    global _MODEL
    _MODEL = None
    import gc

    gc.collect()


def pss_bytes(pid: int | None = None) -> int:
    """Proportional set size of a process (shared pages split between the
    processes that map them)."""
    path = "/proc/%s/smaps_rollup" % (pid or "self")
    with open(path) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss in " + path)


# -- the nodes -----------------------------------------------------------------------
class Node:
    """One persistd daemon with its own private store and socket."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="pd-node")  # 0700
        self.socket = os.path.join(self.dir, "persistd.sock")
        log = open(os.path.join(self.dir, "persistd.log"), "ab")
        self.process = subprocess.Popen(
            [binary, "--socket", self.socket, "--store", os.path.join(self.dir, "store")],
            stdout=log, stderr=subprocess.STDOUT,
        )
        from persistd import admin

        deadline = time.monotonic() + 30
        while True:
            try:
                self.pid = int(admin.status(self.socket)["pid"])
                break
            except ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("persistd did not start; see %s/persistd.log" % self.dir)
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def daemon_binary() -> str:
    from persistd.binary import find_binary

    built = HERE.parent / "bazel-bin" / "server" / "persistd"
    found = os.environ.get("PERSISTD_BIN") or (str(built) if built.exists() else find_binary())
    if not found:
        raise SystemExit("no persistd binary: build it (bazel build //server:persistd) or set PERSISTD_BIN")
    return found


# -- the run -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000, help="training rows (float32)")
    parser.add_argument("--dim", type=int, default=64, help="features per row")
    parser.add_argument("--workers-per-node", type=int, default=4)
    args = parser.parse_args(argv)

    import joblib
    from dask.distributed import Client, LocalCluster, Nanny
    from sklearn.neighbors import KNeighborsRegressor

    rng = np.random.default_rng(0)
    # Embedding-like rows: float32 at 8 significant bits, so lz4 has work to do.
    X = np.round(rng.standard_normal((args.rows, args.dim)), 2).astype(np.float32)
    y = X[:, :4].sum(axis=1)
    model = KNeighborsRegressor(n_neighbors=5, algorithm="brute").fit(X, y)
    queries = X[:16] + np.float32(0.01)
    model_bytes = X.nbytes + y.nbytes

    nodes: list[Node] = []
    with LocalS3(ports=2) as s3, tempfile.TemporaryDirectory() as tmp:
        s3.fs.mkdir("models")
        local = os.path.join(tmp, "knn.pkl")
        joblib.dump(model, local, compress="lz4")
        s3.fs.put(local, KEY)
        object_bytes = os.path.getsize(local)
        warmup = os.path.join(tmp, "warmup.pkl")
        joblib.dump(KNeighborsRegressor(n_neighbors=1).fit(X[:8], y[:8]), warmup, compress="lz4")
        s3.fs.put(warmup, WARMUP_URL)
        binary = daemon_binary()
        cluster = None
        try:
            nodes = [Node(binary), Node(binary)]
            cluster = LocalCluster(
                n_workers=0, processes=True, threads_per_worker=1, dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            for n, node in enumerate(nodes):
                env = {"PERSISTD_SOCKET": node.socket, "FSSPEC_S3_ENDPOINT_URL": s3.endpoints[n]}
                for w in range(args.workers_per_node):
                    cluster.worker_spec["node%d-w%d" % (n, w)] = {
                        "cls": Nanny,
                        "options": {"nthreads": 1, "env": env, "memory_limit": 0,
                                    "silence_logs": logging.ERROR},
                    }
            cluster.scale(2 * args.workers_per_node)
            with Client(cluster) as client:
                client.wait_for_workers(2 * args.workers_per_node)
                # node index of each worker address
                where = {
                    info["id"]: addr for addr, info in client.scheduler_info()["workers"].items()
                }
                by_node = {
                    n: [where["node%d-w%d" % (n, w)] for w in range(args.workers_per_node)]
                    for n in range(2)
                }
                for how in ("joblib", "persistd"):
                    client.run(serve, WARMUP_URL, how, queries[:1])
                results = {}
                for how in ("joblib", "persistd"):
                    results[how] = run_phase(client, s3, nodes, by_node, how, queries)
        finally:
            if cluster is not None:
                cluster.close()
            for node in nodes:
                node.stop()

    load = os.getloadavg()[0]
    print("model: %.1f MB in memory, %.1f MB object (joblib lz4); %d workers per node; "
          "load average %.2f" % (model_bytes / 1e6, object_bytes / 1e6, args.workers_per_node, load))
    print("%-20s %4s %5s %12s %14s %9s %12s" % (
        "load", "node", "GETs", "MB from S3", "fetches/node", "median s", "ΣPSS / model"))
    for how, label in (("persistd", "persistd.load(url)"), ("joblib", "joblib.load(fsspec)")):
        for n in range(2):
            r = results[how][n]
            print("%-20s %4d %5d %12.1f %14.1f %9.3f %12.2f" % (
                label, n, r["gets"], r["sent"] / 1e6, r["sent"] / object_bytes,
                r["median_s"], r["pss"] / model_bytes))
    sums = {results[h][n]["checksum"] for h in results for n in range(2)}
    if len(sums) != 1:
        raise SystemExit("predictions differ between loads: %s" % sums)
    return {"results": results, "model_bytes": model_bytes}


def run_phase(
    client: Any, s3: LocalS3, nodes: list[Node], by_node: dict[int, list[str]],
    how: str, queries: np.ndarray,
) -> dict[int, dict[str, Any]]:
    """Every worker loads and keeps the model; per node: GETs, load times,
    and ΣPSS added (workers, plus the daemon for persistd)."""
    client.run(forget)
    before = client.run(pss_bytes)
    daemons_before = {n: pss_bytes(node.pid) for n, node in enumerate(nodes)}
    gets_before = {n: s3.gets(KEY, n) for n in range(2)}
    sent_before = {n: s3.bytes_sent(KEY, n) for n in range(2)}
    futures = {
        addr: client.submit(serve, URL, how, queries, workers=[addr], pure=False)
        for n in range(2) for addr in by_node[n]
    }
    done = {addr: f.result() for addr, f in futures.items()}
    after = client.run(pss_bytes)
    out: dict[int, dict[str, Any]] = {}
    for n, node in enumerate(nodes):
        added = sum(after[a] - before[a] for a in by_node[n])
        if how == "persistd":
            added += pss_bytes(node.pid) - daemons_before[n]
        out[n] = {
            "gets": s3.gets(KEY, n) - gets_before[n],
            "sent": s3.bytes_sent(KEY, n) - sent_before[n],
            "median_s": statistics.median(done[a][0] for a in by_node[n]),
            "pss": added,
            "checksum": round(done[by_node[n][0]][1], 3),
        }
    client.run(forget)
    return out


if __name__ == "__main__":
    main()
