"""Dump/load speed of persistd against joblib, np.save and pickle, measured
in the same run on the same objects.

    .venv/bin/python bench/dump_load.py [--mb 200] [--repeat 3]

Needs a running persistd (PERSISTD_SOCKET, or the default socket). Reports
median seconds and persistd's speedup over joblib per codec; "cold" loads are
the first load of a freshly written file (the daemon has not seen it), "warm"
loads hit the daemon's segment cache. Every load touches every page.
"""
from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import tempfile

import joblib
import numpy as np

import persistd
from common import table, timed, touch


def make_model(mb: int) -> dict:
    """A NumPy-heavy object shaped like a fitted model: a few big float
    arrays, an int index, and Python metadata."""
    rng = np.random.default_rng(0)
    n = mb * (1 << 20) // 8
    # Half random, half smooth: realistic compressibility.
    weights = rng.standard_normal(n // 2).astype(np.float64)
    grid = np.linspace(0, 1, n // 4).astype(np.float64)
    labels = rng.integers(0, 100, n // 4 // 2, dtype=np.int64)
    return {"weights": weights, "grid": grid, "labels": labels,
            "meta": {"version": 3, "classes": list(range(100))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="model size in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model = make_model(args.mb)
    nbytes = sum(v.nbytes for v in model.values() if isinstance(v, np.ndarray))
    tmp = tempfile.mkdtemp(prefix="persistd-bench-")
    rows = []
    try:
        # Baselines without compression.
        p = os.path.join(tmp, "m.npy")
        t_save, _ = timed(lambda: np.save(p, model["weights"]), args.repeat)
        t_npload, _ = timed(lambda: touch(np.load(p)), args.repeat)
        frac = model["weights"].nbytes / nbytes
        rows.append(["np.save/np.load (weights only, scaled)", "-",
                     f"{t_save / frac:.3f}", f"{t_npload / frac:.3f}", "-", "-", "-"])
        p = os.path.join(tmp, "m.pickle")

        def pickle_dump():
            with open(p, "wb") as f:
                pickle.dump(model, f, protocol=5)

        def pickle_load():
            with open(p, "rb") as f:
                return touch(pickle.load(f))

        t_pd, _ = timed(pickle_dump, args.repeat)
        t_pl, _ = timed(pickle_load, args.repeat)
        rows.append(["pickle (protocol 5)", "-", f"{t_pd:.3f}", f"{t_pl:.3f}", "-", "-", "-"])

        for label, compress in [("none", 0), ("zlib-3", 3), ("lz4", "lz4"),
                                ("gzip-3", ("gzip", 3)), ("zstd-3", ("zstd", 3))]:
            jp = os.path.join(tmp, f"j-{label}.pkl")
            pp = os.path.join(tmp, f"p-{label}.pkl")
            if label != "zstd-3":
                t_jd, _ = timed(lambda: joblib.dump(model, jp, compress=compress), args.repeat)
                t_jl, _ = timed(lambda: touch(joblib.load(jp)), args.repeat)
            else:
                t_jd = t_jl = float("nan")  # joblib has no zstd
            t_pd, _ = timed(lambda: persistd.dump(model, pp, compress=compress), args.repeat)
            # Cold: a fresh file per repetition, so the daemon never saw it.
            colds = []
            for i in range(args.repeat):
                fresh = os.path.join(tmp, f"p-{label}-{i}.pkl")
                shutil.copyfile(pp, fresh)
                t, _ = timed(lambda: touch(persistd.load(fresh)), 1)
                colds.append(t)
            t_cold = sorted(colds)[len(colds) // 2]
            t_warm, _ = timed(lambda: touch(persistd.load(pp)), args.repeat)
            size = os.path.getsize(pp) / (1 << 20)
            rows.append([f"joblib {label}", f"{os.path.getsize(jp) / (1 << 20):.0f}" if label != "zstd-3" else "-",
                         f"{t_jd:.3f}", f"{t_jl:.3f}", "-", "-", "-"])
            rows.append([f"persistd {label}", f"{size:.0f}", f"{t_pd:.3f}", f"{t_cold:.3f}",
                         f"{t_warm:.3f}",
                         f"{t_jd / t_pd:.1f}x" if t_jd == t_jd else "-",
                         f"{t_jl / t_cold:.1f}x / {t_jl / t_warm:.0f}x" if t_jl == t_jl else "-"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model: {nbytes / (1 << 20):.0f} MiB of arrays; median of {args.repeat}; "
          "loads touch every page")
    print(table(["what", "MiB on disk", "dump s", "load s (cold)", "load s (warm)",
                 "dump speedup vs joblib", "load speedup cold / warm"], rows))


if __name__ == "__main__":
    main()
