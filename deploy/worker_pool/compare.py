"""The worker pool's memory with persistd, with joblib, and with no model.

    pip install gunicorn            # besides persistd (and joblib)
    python compare.py --workers 4 --mib 64

Starts the same gunicorn pool (app.py) three times: ``LOADER=none`` (the
interpreters alone), ``joblib`` (each worker ``joblib.load``s the model)
and ``persistd`` (each worker ``persistd.load``s it); checks that all
workers predict alike; and prints each pool's total PSS (pool.py) and what
the model added to it, in model sizes. For persistd the daemon's own PSS is
counted with the pool. Prints a Markdown table (the README's).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request

import numpy as np

import persistd
from make_model import make_model
from pool import pool_pss, pss_bytes, run_pool


def _predictions(port: int, seeds: range) -> list[int]:
    out = []
    for seed in seeds:
        with urllib.request.urlopen("http://127.0.0.1:%d/predict?seed=%d" % (port, seed),
                                    timeout=60) as reply:
            out.append(json.load(reply)["class"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--mib", type=int, default=64, help="model size (default: 64)")
    parser.add_argument("--model", default="model.pkl")
    parser.add_argument("--port", type=int, default=8731)
    args = parser.parse_args()

    model = make_model(args.mib)
    model_bytes = sum(a.nbytes for a in model.values())
    persistd.dump(model, args.model, compress=("zlib", 3))
    del model
    rows = {}
    expected = None
    for loader in ("none", "joblib", "persistd"):
        with run_pool(args.model, loader, args.workers, args.port) as pool:
            if loader != "none":
                got = _predictions(args.port, range(8))
                assert expected is None or got == expected, (loader, got, expected)
                expected = got
            measured = pool_pss(pool.process.pid)
            total = int(measured["total_bytes"])  # type: ignore[call-overload]
            if loader == "persistd":
                total += pss_bytes(int(persistd.Client().status()["pid"]))
            rows[loader] = total
    load = os.getloadavg()
    print("model: %.1f MiB of arrays, %s on disk (zlib-3); %d gunicorn workers; "
          "load average %.2f %.2f %.2f"
          % (model_bytes / (1 << 20), _mib(os.path.getsize(args.model)), args.workers, *load))
    print()
    print("| pool loads the model with | total PSS | added by the model |")
    print("| --- | ---: | ---: |")
    for loader, label in (("none", "(no model)"), ("joblib", "`joblib.load`"),
                          ("persistd", "`persistd.load` (+ daemon)")):
        added = rows[loader] - rows["none"]
        extra = "" if loader == "none" else "%s = %.2fx the model" % (_mib(added), added / model_bytes)
        print("| %s | %s | %s |" % (label, _mib(rows[loader]), extra or "-"))


def _mib(n: float) -> str:
    return "%.0f MiB" % (n / (1 << 20))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
