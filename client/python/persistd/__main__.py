"""``python -m persistd status``: what the daemon is doing.

A small operator tool: it prints the daemon's ``Status`` reply (socket,
store, sessions, segments, cache use) and exits non-zero when no daemon
answers, so it also serves as a health check in scripts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from persistd import paths


def _status() -> int:
    import grpc

    from persistd._proto import persistd_pb2 as pb
    from persistd._proto import persistd_pb2_grpc as pb_grpc

    socket = paths.socket_path()
    with grpc.insecure_channel("unix:" + socket) as channel:
        try:
            stub: Any = pb_grpc.PersistdStub(channel)  # type: ignore[no-untyped-call]
            reply = stub.Status(pb.StatusRequest(), timeout=5)
        except grpc.RpcError as err:
            print("persistd is not answering at %s: %s" % (socket, err.details()), file=sys.stderr)
            return 1
    for field in reply.DESCRIPTOR.fields:
        print("%-20s %s" % (field.name, getattr(reply, field.name)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m persistd", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["status"], help="what to do")
    parser.parse_args(argv)
    return _status()


if __name__ == "__main__":
    sys.exit(main())
