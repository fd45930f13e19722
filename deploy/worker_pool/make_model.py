"""Write the worker-pool example's model: ``python make_model.py [model.pkl] [--mib 64]``.

A two-layer network with 4-bit quantized weights (so it compresses, as real
quantized models do), dumped by persistd with zlib level 3: a joblib file
that ``joblib.load`` reads too, so the same file serves both pools.
"""

from __future__ import annotations

import argparse

import numpy as np

import persistd


def make_model(mib: int, seed: int = 0) -> dict[str, np.ndarray]:
    """About ``mib`` MiB of float32 weights: W1 is square, W2 has 16 classes."""
    rng = np.random.default_rng(seed)
    width = int((mib * (1 << 20) / 4) ** 0.5)
    return {
        "mean": rng.standard_normal(width).astype(np.float32),
        "W1": (rng.integers(-8, 8, (width, width), dtype=np.int8) / 8).astype(np.float32),
        "b1": rng.standard_normal(width).astype(np.float32),
        "W2": rng.standard_normal((width, 16)).astype(np.float32),
        "b2": np.zeros(16, dtype=np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="model.pkl")
    parser.add_argument("--mib", type=int, default=64, help="model size (default: 64)")
    args = parser.parse_args()
    model = make_model(args.mib)
    persistd.dump(model, args.path, compress=("zlib", 3))
    print("%s: %.1f MiB of arrays" % (args.path, sum(a.nbytes for a in model.values()) / (1 << 20)))


if __name__ == "__main__":
    main()
