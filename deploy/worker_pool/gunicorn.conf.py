"""gunicorn settings of the worker-pool example (``gunicorn -c gunicorn.conf.py app:app``).

Workers load the model themselves (no ``preload_app``): that is how a pool
that restarts workers (``max_requests``) or loads after fork behaves, and
the case where N workers would otherwise hold N copies.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "4"))
preload_app = False
#: The master's pid (``kill $(cat gunicorn.pid)``, ``python pool.py pss $(cat gunicorn.pid)``).
pidfile = os.environ.get("PIDFILE", "gunicorn.pid")


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Called once the worker has imported app.py, i.e. loaded the model.
    With $POOL_READY_DIR set, say so with a file named by the worker's pid
    (compare.py and the end-to-end test wait for one per worker)."""
    ready = os.environ.get("POOL_READY_DIR")
    if ready:
        open(os.path.join(ready, str(worker.pid)), "w").close()
