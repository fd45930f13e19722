"""The issue's target table in one command: persistd against joblib (and
pickle protocol 5 / np.save where they apply) on the same objects, in the
same run, on a daemon of its own, next to this machine's own limits.

    .venv/bin/python bench/run.py [--quick] [--json PATH]

Starts bazel-bin/server/persistd (or $PERSISTD_BIN) on a socket in a private
temp dir and stops it at the end. Every load touches every page (one byte per
page of every array): a lazily mapped load must pay for what it hands out.
"first load" loads a fresh copy of the file, written just before (outside the
timer), so the daemon has never seen it; nothing is dropped from the page
cache, so no load reads the disk. "repeated load" loads the same file again
(persistd: its cached segment). Times are medians; MB/s is array bytes (not
file bytes) per second.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import statistics
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import joblib
import numpy as np

# gRPC's INFO line when the daemon stops ("Got goaway") is not a result.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
import persistd  # noqa: E402  (after GRPC_VERBOSITY: gRPC reads it at import)
from common import private_daemon, settle, table, timed, touch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1e6

#: codec label -> the `compress` argument of joblib and persistd (joblib has no zstd).
CODECS: dict[str, Any] = {"none": 0, "lz4": "lz4", "zlib-3": ("zlib", 3), "zstd-3": ("zstd", 3)}

Dump = Callable[[Any, str], object]
Load = Callable[[str], object]


def pickle_dump(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)


def pickle_load(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def dumpers(codec: str, base: str | None) -> dict[str, Dump]:
    """The dump functions that apply to `codec`: joblib has no zstd, the
    baselines have no compression."""
    c = CODECS[codec]
    out: dict[str, Dump] = {}
    if codec != "zstd-3":
        out["joblib"] = lambda o, p: joblib.dump(o, p, compress=c)
    out["persistd"] = lambda o, p: persistd.dump(o, p, compress=c)
    if codec == "none" and base == "np.save":
        out["np.save"] = lambda o, p: np.save(p, o)
    elif codec == "none" and base == "pickle-5":
        out["pickle-5"] = pickle_dump
    return out


LOADERS: dict[str, Load] = {
    "joblib": joblib.load,
    "persistd": persistd.load,
    "np.save": np.load,
    "pickle-5": pickle_load,
}


@dataclass
class Result:
    """The raw times of one workload x codec x operation x implementation."""

    workload: str
    codec: str
    op: str
    impl: str
    nbytes: int
    size: int
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class Bench:
    """Runs the cases and keeps every Result. Implementations alternate
    within each repetition, so drift (page cache, the host) hits all alike."""

    def __init__(self, tmp: str, daemon_pid: int) -> None:
        self.tmp = tmp
        self.daemon_pid = daemon_pid
        self.results: list[Result] = []

    def get(self, workload: str, codec: str, op: str, impl: str) -> Result:
        return next(r for r in self.results
                    if (r.workload, r.codec, r.op, r.impl) == (workload, codec, op, impl))

    def path(self, workload: str, codec: str, impl: str) -> str:
        slug = f"{workload}-{codec}-{impl}".replace(" ", "_").replace("/", "_")
        return os.path.join(self.tmp, slug + (".npy" if impl == "np.save" else ".pkl"))

    def case(self, workload: str, codec: str, obj: Any, base: str | None, repeat: int) -> None:
        """Dump, first load and repeated load of `obj` with `codec` by every
        implementation that has it; each loads the file it wrote."""
        nbytes = array_bytes(obj)
        writers = dumpers(codec, base)
        paths = {impl: self.path(workload, codec, impl) for impl in writers}
        dumps = {impl: Result(workload, codec, "dump", impl, nbytes, 0) for impl in writers}
        for _ in range(repeat):
            for impl, dump in writers.items():
                if os.path.exists(paths[impl]):
                    os.unlink(paths[impl])
                dumps[impl].times.append(timed(lambda: dump(obj, paths[impl]), 1)[0])
                if impl == "persistd" and codec != "none":
                    settle(self.daemon_pid)  # its background decompression
        for impl, r in dumps.items():
            r.size = os.path.getsize(paths[impl])
            self.results.append(r)
        self.loads(workload, codec, {impl: (LOADERS[impl], p) for impl, p in paths.items()},
                   nbytes, repeat)

    def loads(self, workload: str, codec: str, readers: dict[str, tuple[Load, str]],
              nbytes: int, repeat: int) -> None:
        """First loads (a fresh copy each time) then repeated loads (the
        same file, loaded once untimed first) of each reader's file, each
        followed by touching every page."""
        first = {impl: Result(workload, codec, "first load", impl, nbytes, os.path.getsize(p))
                 for impl, (_, p) in readers.items()}
        for i in range(repeat):
            for impl, (load, p) in readers.items():
                fresh = f"{p}.fresh{i}{os.path.splitext(p)[1]}"
                shutil.copyfile(p, fresh)
                first[impl].times.append(timed(lambda: touch(load(fresh)), 1)[0])
                os.unlink(fresh)
        warm = {impl: Result(workload, codec, "repeated load", impl, nbytes, r.size)
                for impl, r in first.items()}
        for impl, (load, p) in readers.items():
            touch(load(p))
        for _ in range(repeat):
            for impl, (load, p) in readers.items():
                warm[impl].times.append(timed(lambda: touch(load(p)), 1)[0])
        self.results += list(first.values()) + list(warm.values())


def array_bytes(value: Any) -> int:
    """Bytes of every ndarray in `value` (what MB/s is counted in)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(array_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(array_bytes(v) for v in value)
    return 0


def make_model(n_trees: int = 200, nodes: int = 2000) -> dict[str, Any]:
    """Shaped like a fitted random forest: per tree, int32 child links
    (mostly increasing ids, -1 at leaves), float64 class counts (2000x1x3,
    integral, so they compress as real classifiers' counts do) and small
    dicts of parameters; 12.8 MB of arrays in 600 arrays."""
    rng = np.random.default_rng(0)
    trees = []
    for i in range(n_trees):
        leaf = rng.random(nodes) < 0.5
        left = np.where(leaf, -1, np.arange(1, nodes + 1)).astype(np.int32)
        right = np.where(leaf, -1, left + rng.integers(1, 64, nodes)).astype(np.int32)
        value = rng.integers(0, 100, (nodes, 1, 3)).astype(np.float64)
        trees.append({"children_left": left, "children_right": right, "value": value,
                      "params": {"max_depth": 12, "criterion": "gini", "random_state": i},
                      "n_outputs": 1, "classes": [0, 1, 2]})
    return {"estimators": trees, "meta": {"n_estimators": n_trees, "version": "1.6"}}


def machine_limits(tmp: str, data: np.ndarray, repeat: int) -> dict[str, float]:
    """What this machine does with the same 80 MB without persistd or
    joblib, in the same run: the floors that persistd's times compare with."""
    raw = data.tobytes()
    dst = np.empty_like(data)
    dst[:] = 0  # faulted in: np.copyto then measures memcpy alone
    out = {"memcpy GB/s (np.copyto, destination faulted in)":
               len(raw) / timed(lambda: np.copyto(dst, data), repeat)[0] / 1e9,
           "copy to new memory GB/s (ndarray.copy, page faults included)":
               len(raw) / timed(lambda: data.copy(), repeat)[0] / 1e9}

    def write_fresh() -> None:
        path = os.path.join(tmp, "write-test")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    times = []
    for _ in range(repeat):
        if os.path.exists(os.path.join(tmp, "write-test")):
            os.unlink(os.path.join(tmp, "write-test"))
        times.append(timed(write_fresh, 1)[0])
    os.unlink(os.path.join(tmp, "write-test"))
    out["page-cache write GB/s (os.write to a fresh file, no fsync)"] = len(raw) / statistics.median(times) / 1e9

    codecs: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "zlib-3": (lambda b: zlib.compress(b, 3), zlib.decompress)}
    try:
        import lz4.frame

        codecs["lz4 (lz4.frame, default level as joblib)"] = (lz4.frame.compress, lz4.frame.decompress)
    except ImportError:
        pass
    try:
        import zstandard

        codecs["zstd-3 (zstandard)"] = (zstandard.ZstdCompressor(level=3).compress,
                                        zstandard.ZstdDecompressor().decompress)
    except ImportError:
        pass
    for name, (compress, decompress) in codecs.items():
        t_c, packed = timed(lambda: compress(raw), repeat)
        t_d, _ = timed(lambda: decompress(packed), repeat)
        out[f"{name} compress MB/s"] = len(raw) / t_c / MB
        out[f"{name} decompress MB/s"] = len(raw) / t_d / MB
        out[f"{name} size ratio"] = len(packed) / len(raw)
    return out


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.{max(0, 2 - math.floor(math.log10(ms)))}f}" if ms > 0 else "0"


def fmt_size(n: int) -> str:
    return f"{n / MB:.2f} MB" if n >= MB else f"{n / 1e3:.2f} KB"


def results_table(bench: Bench) -> str:
    """One row per workload x codec x operation, implementations side by
    side; joblib/persistd above 1 means persistd is faster."""
    keys = list(dict.fromkeys((r.workload, r.codec, r.op) for r in bench.results))
    rows = []
    for w, c, op in keys:
        by = {r.impl: r for r in bench.results if (r.workload, r.codec, r.op) == (w, c, op)}
        base = next((by[i] for i in ("np.save", "pickle-5") if i in by), None)
        row: list[object] = [w, c, op]
        for r in (by.get("joblib"), by.get("persistd"), base):
            row += [fmt_ms(r.median), f"{r.nbytes / r.median / MB:.0f}" if r.nbytes >= MB else "-"] if r else ["-", "-"]
        row.insert(7, base.impl if base else "-")
        row.append(" / ".join(fmt_size(r.size) if r else "-" for r in (by.get("joblib"), by.get("persistd"), base)))
        j, p = by.get("joblib"), by.get("persistd")
        row.append(f"{j.median / p.median:.2f}" if j and p else "-")
        rows.append(row)
    return table(["workload", "codec", "op", "joblib ms", "joblib MB/s", "persistd ms",
                  "persistd MB/s", "baseline", "baseline ms", "baseline MB/s",
                  "file size joblib / persistd / baseline", "joblib/persistd"], rows)


@dataclass
class Target:
    name: str
    measured: str
    goal: str
    ok: bool


def targets(b: Bench) -> list[Target]:
    """The issue's targets, each from this run's medians."""
    def t(w: str, c: str, op: str, impl: str) -> float:
        return b.get(w, c, op, impl).median

    def speedup(name: str, w: str, c: str, op: str, goal: float) -> Target:
        x = t(w, c, op, "joblib") / t(w, c, op, "persistd")
        return Target(name, f"{x:.2f}x", f">= {goal}x", x >= goal)

    A, M, S, J = "array 80 MB", "model 200 trees", "small dict", "array 80 MB joblib-written"
    out = [speedup("dump 80 MB uncompressed vs joblib", A, "none", "dump", 0.9)]
    sd = {i: t(S, "none", "dump", i) + t(S, "none", "first load", i) for i in ("joblib", "persistd")}
    x = sd["joblib"] / sd["persistd"]
    out.append(Target("small dict dump + first load vs joblib", f"{x:.2f}x", ">= 1.25x", x >= 1.25))
    for op, goal in (("dump", 1.3), ("first load", 1.5)):
        x = t(M, "none", op, "persistd") / t(M, "none", op, "pickle-5")
        label = "dump" if op == "dump" else "first load + touch"
        out.append(Target(f"model {label}, time / pickle-5's", f"{x:.2f}x", f"<= {goal}x", x <= goal))
    out.append(speedup("dump 80 MB lz4 vs joblib", A, "lz4", "dump", 3))
    out.append(speedup("dump 80 MB zlib-3 vs joblib", A, "zlib-3", "dump", 4))
    x = b.get(A, "zlib-3", "dump", "persistd").size / b.get(A, "zlib-3", "dump", "joblib").size
    out.append(Target("dump 80 MB zlib-3 size / joblib's", f"{x:.3f}", "within 5%", abs(x - 1) <= 0.05))
    for c in ("zlib-3", "lz4"):
        out.append(speedup(f"first load + touch of joblib's {c} 80 MB file vs joblib", J, c, "first load", 3))
    x = t(M, "zlib-3", "dump", "joblib") / t(M, "zstd-3", "dump", "persistd")
    out.append(Target("model dump: persistd zstd-3 vs joblib zlib-3, time", f"{x:.2f}x", ">= 5x", x >= 5))
    x = b.get(M, "zstd-3", "dump", "persistd").size / b.get(M, "zlib-3", "dump", "joblib").size
    out.append(Target("model dump: persistd zstd-3 size / joblib zlib-3's", f"{x:.3f}", "<= 1.05", x <= 1.05))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~1-2 minutes)")
    parser.add_argument("--json", metavar="PATH", help="write every raw time here")
    args = parser.parse_args()
    n_big, n_model, n_small = (3, 3, 50) if args.quick else (7, 9, 200)
    binary = os.environ.get("PERSISTD_BIN") or os.path.join(REPO, "bazel-bin/server/persistd")
    if not os.access(binary, os.X_OK):
        sys.exit(f"no persistd at {binary}: `bazel build //server:persistd`, or set PERSISTD_BIN")
    built = time.ctime(os.path.getmtime(binary))

    started, load_before = time.perf_counter(), os.getloadavg()[0]
    arr = np.random.rand(20_000_000).astype(np.float32)
    model = make_model()
    small = {"array": np.random.rand(5), "metadata": {"version": 1}}
    with private_daemon(binary) as (tmp, daemon):
        limits = machine_limits(tmp, arr, n_big)
        b = Bench(tmp, daemon.pid)
        b.case("small dict", "none", small, "pickle-5", 3)  # untimed warm-up: connect, imports
        b.results.clear()
        b.case("small dict", "none", small, "pickle-5", n_small)
        for codec in CODECS:
            b.case("array 80 MB", codec, arr, "np.save", n_big)
        for codec in ("zlib-3", "lz4"):
            # The daemon has never seen a joblib-written file: a fresh copy each time.
            p = b.path("array 80 MB", codec, "joblib")
            b.loads("array 80 MB joblib-written", codec,
                    {"joblib": (joblib.load, p), "persistd": (persistd.load, p)}, arr.nbytes, n_big)
        for codec in CODECS:
            b.case("model 200 trees", codec, model, "pickle-5", n_model)
    elapsed, load_after = time.perf_counter() - started, os.getloadavg()[0]

    goals = targets(b)
    print(f"# persistd vs joblib {joblib.__version__} (numpy {np.__version__}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs){' --quick' if args.quick else ''}\n")
    print(f"daemon: {binary} (built {built})\n")
    print(f"Medians of {n_small} (small dict), {n_big} (80 MB array), {n_model} (model) runs. "
          "Every load touches every page. first load = a fresh copy the daemon never saw; "
          "the page cache is not dropped (every file was just written, so no load reads "
          "the disk). After a compressed dump persistd decompresses the file in the background "
          "(a warm cache for its next load; a fresh copy does not get it): the next step "
          "waits for that to end. MB/s = array bytes per second. joblib/persistd > 1: "
          "persistd faster.\n")
    busy = max(load_before, load_after) > 0.5 * (os.cpu_count() or 1)
    print(f"1-minute load average {load_before:.1f} before, {load_after:.1f} after"
          + (": OTHER WORK SHARED THE CPUs, times are inflated and noisy.\n" if busy else ".\n"))
    print(results_table(b))
    print("\n## Machine limits, same run, same 80 MB (single thread)\n")
    print(table(["what", "value"], [[k, f"{v:.3f}" if v < 10 else f"{v:.0f}"] for k, v in limits.items()]))
    print("\n## Targets\n")
    print(table(["target", "measured", "goal", ""],
                [[g.name, g.measured, g.goal, "PASS" if g.ok else "MISS"] for g in goals]))
    print(f"\n{sum(g.ok for g in goals)}/{len(goals)} targets met; run took {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": args.quick, "elapsed_s": elapsed,
                       "loadavg_before_after": [load_before, load_after], "limits": limits,
                       "results": [asdict(r) | {"median": r.median} for r in b.results],
                       "targets": [asdict(g) for g in goals]}, f, indent=1)


if __name__ == "__main__":
    main()
