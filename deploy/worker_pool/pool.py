"""Run the example pool and measure its memory: ``python pool.py pss MASTER_PID``.

PSS (proportional set size, /proc/PID/smaps_rollup) charges each process
its private pages plus its share of the pages it shares: N workers mapping
one copy of a model are charged one model between them, while N private
copies are charged N. So the pool's total PSS is what it really costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))


def pss_bytes(pid: int) -> int:
    """The process's PSS, from the kernel's rollup of its mappings."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss line for pid %d" % pid)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers of its master)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open("/proc/%s/stat" % entry) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


def file_mappings(pid: int, min_bytes: int = 1 << 20) -> dict[str, dict[str, int]]:
    """The process's mappings of files of at least ``min_bytes``: path to
    resident and proportional bytes (summed over the file's mappings)."""
    found: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header line
                start, end = (int(x, 16) for x in fields[0].split("-"))
                path = fields[5] if len(fields) > 5 and fields[5].startswith("/") else None
                current = None
                if path is not None and end - start >= min_bytes:
                    current = found.setdefault(path, {"rss": 0, "pss": 0})
            elif current is not None and fields[0] in ("Rss:", "Pss:"):
                current[fields[0][:-1].lower()] += int(fields[1]) * 1024
    return found


def pool_pss(master: int) -> dict[str, object]:
    """The master's and its workers' PSS and their sum; and, per file the
    workers map (a persistd segment: the model), each worker's resident
    bytes of it and the workers' summed PSS of it."""
    workers = children(master)
    per_pid = {pid: pss_bytes(pid) for pid in [master, *workers]}
    files: dict[str, dict[str, object]] = {}
    for pid in workers:
        for path, use in file_mappings(pid).items():
            entry = files.setdefault(path, {"rss": {}, "pss_bytes": 0})
            entry["rss"][pid] = use["rss"]  # type: ignore[index]
            entry["pss_bytes"] += use["pss"]  # type: ignore[operator]
    return {"master": master, "workers": workers, "pss": per_pid,
            "total_bytes": sum(per_pid.values()), "files": files}


@dataclass
class Pool:
    """A running gunicorn pool: its master, its workers once all are ready."""

    process: subprocess.Popen[bytes]
    workers: list[int] = field(default_factory=list)


@contextlib.contextmanager
def run_pool(model: str, loader: str, workers: int, port: int,
             env: dict[str, str] | None = None, timeout: float = 300) -> Iterator[Pool]:
    """Start ``gunicorn -c gunicorn.conf.py app:app`` from this directory,
    wait until every worker has loaded the model, stop it afterwards."""
    ready = tempfile.mkdtemp(prefix="pool-ready-")
    child_env = dict(env or os.environ, MODEL=os.path.abspath(model), LOADER=loader,
                     WORKERS=str(workers), BIND="127.0.0.1:%d" % port, POOL_READY_DIR=ready)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    process = subprocess.Popen([gunicorn, "-c", "gunicorn.conf.py", "app:app"], cwd=HERE,
                               env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pool = Pool(process)
    try:
        deadline = time.monotonic() + timeout
        while len(os.listdir(ready)) < workers:
            if process.poll() is not None:
                raise RuntimeError("gunicorn exited: %s" % process.stderr.read().decode()[-2000:])
            if time.monotonic() > deadline:
                raise TimeoutError("the pool's workers were not ready in %.0f s" % timeout)
            time.sleep(0.05)
        pool.workers = sorted(int(name) for name in os.listdir(ready))
        yield pool
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name in os.listdir(ready):
            os.unlink(os.path.join(ready, name))
        os.rmdir(ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pss = sub.add_parser("pss", help="ΣPSS of a gunicorn master and its workers, as JSON")
    pss.add_argument("master", type=int)
    args = parser.parse_args()
    if args.command == "pss":
        print(json.dumps(pool_pss(args.master)))


if __name__ == "__main__":
    main()
