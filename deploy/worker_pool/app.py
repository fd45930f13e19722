"""A prediction service whose workers share one model: the worker-pool example.

Every gunicorn worker loads the model at startup (gunicorn's default: no
``--preload``, so each worker imports this module itself) and serves
``GET /predict?seed=N`` (the class of a sample drawn from seed N) and
``GET /`` (the worker's pid and how the model was loaded).

With ``LOADER=persistd`` (the default) the model's arrays are views of the
daemon's decompressed segment: all workers map the same pages, so the pool
holds one copy of the model however many workers it has. With
``LOADER=joblib`` each worker decompresses its own copy, as a pool using
``joblib.load`` does; ``LOADER=none`` loads nothing (the interpreter's and
the libraries' own memory, for comparison). ``compare.py`` measures the
three. Each worker answers one prediction before it serves, so the whole
model is in its memory (mapped or copied) from the start.

    MODEL=model.pkl gunicorn -w 4 -b 127.0.0.1:8000 app:app
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import numpy as np

#: Absolute, so that ``persistctl cache ls`` names the model's segment by it.
MODEL_PATH = os.path.abspath(os.environ.get("MODEL", "model.pkl"))
LOADER = os.environ.get("LOADER", "persistd")


def _load_model() -> tuple[dict[str, Any] | None, float]:
    started = time.perf_counter()
    if LOADER == "persistd":
        import persistd

        model = persistd.load(MODEL_PATH)
    elif LOADER == "joblib":
        import joblib

        model = joblib.load(MODEL_PATH)
    elif LOADER == "none":
        import joblib  # noqa: F401 (the libraries' memory is not the model's)
        import persistd  # noqa: F401

        model = None
    else:
        raise SystemExit("LOADER=%r: use persistd, joblib or none" % LOADER)
    return model, time.perf_counter() - started


def predict(model: dict[str, Any], x: np.ndarray) -> int:
    """A two-layer network: relu(x W1 + b1) W2 + b2, the best class."""
    hidden = np.maximum((x - model["mean"]) @ model["W1"] + model["b1"], 0)
    return int(np.argmax(hidden @ model["W2"] + model["b2"]))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI application gunicorn serves."""
    path = environ.get("PATH_INFO", "/")
    if path == "/predict" and MODEL is not None:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        seed = int(query.get("seed", ["0"])[0])
        x = np.random.default_rng(seed).standard_normal(MODEL["W1"].shape[0], dtype=np.float32)
        body: dict[str, Any] = {"class": predict(MODEL, x), "pid": os.getpid()}
    elif path == "/":
        body = {"pid": os.getpid(), "loader": LOADER, "load_seconds": LOAD_SECONDS}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    data = json.dumps(body).encode() + b"\n"
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]


MODEL, LOAD_SECONDS = _load_model()
if MODEL is not None:  # warm up: touches every weight once
    predict(MODEL, np.zeros(MODEL["W1"].shape[0], dtype=np.float32))
