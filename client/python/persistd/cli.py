"""persistctl: operate the persistd daemon.

  persistctl status [--json]           version, uptime, store, log, cache use,
                                       counters; leases per client pid; builds
  persistctl cache ls [--json]         cached segments: source, codec, sizes, age, leases
  persistctl cache evict PATH...       drop the segments of these files
  persistctl cache evict --stale       ... of files deleted or changed since
  persistctl cache evict --all         ... all of them
  persistctl verify FILE [--json]      codec, format, arrays with dtype, shape, CRC-32
  persistctl stop                      SIGTERM the daemon (if it is yours)

Human tables by default, --json for scripts. Exit status: 0 on success, 1 on
failure (e.g. no daemon answers: `persistctl status` is a health check),
2 on bad usage. `python -m persistd` is the same program.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from persistd import admin, paths


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        print("persistctl: %s" % exc, file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persistctl",
        description="Operate the persistd daemon (the socket is $PERSISTD_SOCKET, "
        "else the default one).",
        epilog="Exit status: 0 success, 1 failure (no daemon, a bad file), 2 usage.",
    )
    parser.add_argument("--socket", help="the daemon's socket (default: %s)" % paths.socket_path())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="the daemon's state and counters")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_status)

    cache = commands.add_parser("cache", help="the cache of decompressed segments")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    ls = cache_commands.add_parser("ls", help="list cached segments")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(run=_cache_ls)
    evict = cache_commands.add_parser(
        "evict", help="stop serving segments (leased ones go when their leases end)"
    )
    evict.add_argument("paths", nargs="*", metavar="PATH", help="source files whose segments go")
    evict.add_argument("--all", action="store_true", help="every segment")
    evict.add_argument(
        "--stale", action="store_true", help="segments of files deleted or changed since"
    )
    evict.add_argument("--json", action="store_true", help="print JSON")
    evict.set_defaults(run=_cache_evict)

    verify = commands.add_parser(
        "verify", help="load FILE through the daemon without unpickling it and check its arrays"
    )
    verify.add_argument("file", metavar="FILE")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(run=_verify)

    stop = commands.add_parser("stop", help="stop the daemon (SIGTERM; only your own)")
    stop.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    stop.set_defaults(run=_stop)
    return parser


# -- commands -------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    reply = admin.status(args.socket)
    if args.json:
        return _print_json(reply)
    budget = reply["cache_budget_bytes"]
    used = reply["cache_bytes"]
    rows = [
        ("version", "%s (protocol %d)" % (reply["version"], reply["protocol"])),
        ("pid", reply["pid"]),
        ("uptime", _duration(reply["uptime_seconds"])),
        ("socket", reply["socket_path"]),
        ("store", reply["store_dir"]),
        ("cache", "%s of %s (%.0f%%)" % (_size(used), _size(budget), 100.0 * used / budget if budget else 0)),
        ("segments", "%d (%d leased)" % (reply["segments"], reply["leased_segments"])),
        ("sessions", reply["sessions"]),
        ("loads", "%d (%d cache hits)" % (reply["loads"], reply["cache_hits"])),
        ("dumps", reply["dumps"]),
        ("evictions", reply["evictions"]),
        ("fsync", "on" if reply["fsync"] else "off"),
        ("log", "%s (level %s)" % (reply["log_file"] or "-", reply["log_level"] or "?")),
    ]
    for name, value in rows:
        print("%-10s %s" % (name, value))
    _print_clients(reply["clients"])
    for build in reply["builds"]:
        total = build["source_bytes"]
        print("building   %s: %s of %s decoded (%.0f%%)" % (
            build["source_path"] or "-", _size(build["read_bytes"]), _size(total),
            100.0 * build["read_bytes"] / total if total else 100.0))
    return 0


def _print_clients(clients: list[dict[str, Any]]) -> None:
    """One row per session: the client's pid (as the kernel told the
    daemon) and what it leases."""
    if not clients:
        return
    print()
    rows = [("PID", "SESSION", "CLIENT", "LEASES", "SEGMENTS", "LEASED", "AGE")]
    for client in sorted(clients, key=lambda c: (c["pid"], c["session_id"])):
        rows.append((
            str(client["pid"]),
            client["session_id"],
            client["client"] or "-",
            str(client["leases"]),
            str(client["segments"]),
            _size(client["segment_bytes"]),
            _duration(client["age_seconds"]),
        ))
    _print_table(rows, right=frozenset({0, 3, 4, 5, 6}))


def _cache_ls(args: argparse.Namespace) -> int:
    segments = admin.list_segments(args.socket)
    if args.json:
        return _print_json(segments)
    if not segments:
        print("no cached segments")
        return 0
    rows = [("SOURCE", "CODEC", "SOURCE SIZE", "SEGMENT SIZE", "AGE", "LEASES", "STATE")]
    for info in segments:
        rows.append(
            (
                info["source_path"] or "-",
                info["codec"].removeprefix("CODEC_").lower(),
                _size(info["source_bytes"]),
                _size(info["segment_bytes"]),
                _duration(info["age_seconds"]),
                str(info["leases"]),
                _state(info),
            )
        )
    _print_table(rows, right=frozenset({2, 3, 4, 5}))
    total = sum(info["segment_bytes"] for info in segments)
    print("%d segments, %s" % (len(segments), _size(total)))
    return 0


def _cache_evict(args: argparse.Namespace) -> int:
    if not (args.paths or args.all or args.stale):
        print("persistctl cache evict: name files, or --stale, or --all", file=sys.stderr)
        return 2
    reply = admin.evict(args.socket, all=args.all, stale=args.stale, sources=args.paths)
    if args.json:
        return _print_json(reply)
    for source in reply["source_paths"]:
        print("evicted %s" % (source or "-"))
    pending = " (%d stay until their leases end)" % reply["pending"] if reply["pending"] else ""
    print("%d segments evicted, %s freed%s" % (reply["evicted"], _size(reply["freed_bytes"]), pending))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from persistd.verify import verify

    if args.socket:
        os.environ[paths.SOCKET_ENV] = args.socket
    report = verify(args.file)
    if args.json:
        _print_json(report)
        return 0 if report["ok"] else 1
    print("%s: %s, %s format, %s on disk, %s decoded (pickle %s)%s" % (
        report["file"], report["codec"], report["format"], _size(report["source_bytes"]),
        _size(report["segment_bytes"]), _size(report["pickle_bytes"]),
        ", %d trailing bytes" % report["trailing_bytes"] if report["trailing_bytes"] else "",
    ))
    rows = [("#", "KIND", "DTYPE", "SHAPE", "ORDER", "BYTES", "CRC32", "CHECK")]
    for array in report["arrays"]:
        rows.append((
            str(array["index"]),
            array["kind"],
            array.get("dtype", "-"),
            "x".join(str(n) for n in array["shape"]) if "shape" in array else "-",
            array.get("order", "-"),
            str(array["bytes"]),
            array["crc32"] or "-",
            "ok" if array["ok"] else array.get("problem", "bad"),
        ))
    if report["arrays"]:
        _print_table(rows, right=frozenset({0, 5}))
    print("%d arrays: %s" % (len(report["arrays"]), "ok" if report["ok"] else "PROBLEMS"))
    return 0 if report["ok"] else 1


def _stop(args: argparse.Namespace) -> int:
    pid = admin.stop(args.socket, args.timeout)
    print("persistd (pid %d) stopped" % pid)
    return 0


# -- formatting -------------------------------------------------------------------
def _print_json(value: Any) -> int:
    json.dump(value, sys.stdout, indent=2)
    print()
    return 0


def _print_table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        print("  ".join(cells).rstrip())


def _state(info: dict[str, Any]) -> str:
    if not info["current"]:
        return "retired"  # not served any more; goes with its last lease
    return {
        "SOURCE_CURRENT": "current",
        "SOURCE_MISSING": "stale: deleted",
        "SOURCE_CHANGED": "stale: changed",
    }.get(info["source_state"], "cached")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (value, unit)
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: int) -> str:
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    if seconds < 86400:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)


if __name__ == "__main__":
    sys.exit(main())
