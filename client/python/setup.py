"""Build hook: generate the gRPC stubs from proto/persistd.proto.

The stubs are build products, never committed: the .proto in proto/ is the
one contract with the daemon, so every install regenerates them from it.
The proto directory defaults to ../../proto relative to this file (an
in-tree build); set PERSISTD_PROTO_DIR to build from elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_NAME = "persistd.proto"


def _proto_source() -> Path:
    """Find persistd.proto: $PERSISTD_PROTO_DIR, the repo's proto/, or a copy
    already in the tree (an sdist built from an in-tree checkout)."""
    candidates = []
    if os.environ.get("PERSISTD_PROTO_DIR"):
        candidates.append(Path(os.environ["PERSISTD_PROTO_DIR"]) / PROTO_NAME)
    candidates.append(HERE.parent.parent / "proto" / PROTO_NAME)
    candidates.append(HERE / "persistd" / "_proto" / PROTO_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        "cannot find %s; looked in %s (set PERSISTD_PROTO_DIR)"
        % (PROTO_NAME, ", ".join(str(c.parent) for c in candidates))
    )


def generate_stubs(package_root: Path) -> None:
    """Copy the .proto to persistd/_proto/ and run protoc with -I at the
    package root, so the generated grpc module imports
    ``persistd._proto.persistd_pb2`` instead of a top-level ``persistd_pb2``."""
    out_dir = package_root / "persistd" / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _proto_source()
    target = out_dir / PROTO_NAME
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    (out_dir / "__init__.py").write_text(
        '"""gRPC stubs generated at build time from persistd.proto."""\n'
    )
    rel = "persistd/_proto/" + PROTO_NAME
    subprocess.check_call(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            rel,
        ],
        cwd=package_root,
    )


class BuildPyWithProto(build_py):
    """build_py that regenerates the stubs, so a rebuild sees proto edits."""

    def run(self) -> None:
        generate_stubs(HERE)
        super().run()


# Also now: setuptools checks that persistd/_proto exists while it gathers
# metadata, before any build command runs.
generate_stubs(HERE)
setup(cmdclass={"build_py": BuildPyWithProto})
