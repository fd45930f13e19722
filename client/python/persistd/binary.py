"""Which ``persistd`` daemon binary to run, and the ``persistd`` command.

The wheel carries the daemon (``persistd/_bin/persistd``, copied from Bazel's
output when the wheel is built), so ``pip install persistd-*.whl`` is all a
project needs: no repository, no PATH setup. Order of preference:

1. ``$PERSISTD_BIN``: an explicit choice always wins (tests, a custom build);
2. the binary packaged with this client: built from the same tree, so it
   speaks this client's protocol;
3. a ``persistd`` on PATH (``deploy/install.sh`` puts one in ~/.local/bin).

The ``persistd`` console script the wheel installs (``main``) execs the
same binary, so ``persistd --help`` works in a venv with nothing else.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from persistd import paths

#: The daemon inside the installed package (absent from wheels built
#: without one).
PACKAGED = Path(__file__).resolve().parent / "_bin" / "persistd"

HOW_TO_GET_ONE = (
    "install the persistd wheel, which carries the daemon "
    "(`pip install persistd-<version>-py3-none-linux_x86_64.whl`; in a checkout "
    "of persistd, `bash deploy/build_wheel.sh` builds it into dist/), "
    "or set PERSISTD_BIN=/path/to/persistd, or put persistd on PATH "
    "(deploy/install.sh installs it in ~/.local/bin)"
)


def packaged_binary() -> str | None:
    """The daemon shipped in this package, if this wheel has one."""
    return str(PACKAGED) if os.access(PACKAGED, os.X_OK) else None


def find_binary() -> str | None:
    """The daemon to start: $PERSISTD_BIN, the packaged one, or PATH's.

    A $PERSISTD_BIN that is not an executable file is an error, not a
    reason to look elsewhere: the user asked for that one.
    """
    explicit = os.environ.get(paths.BIN_ENV)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FileNotFoundError(
                "%s=%s is not an executable file: point it at a persistd binary "
                "or unset it to use the one packaged with the client"
                % (paths.BIN_ENV, explicit)
            )
        return explicit
    return packaged_binary() or _binary_on_path()


def _binary_on_path() -> str | None:
    """The first ``persistd`` on PATH that is a daemon, not a console-script
    wrapper like ours (which, without a packaged binary, would only come
    back here)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = shutil.which("persistd", path=directory or ".")
        if candidate is not None and not _is_python_script(candidate):
            return candidate
    return None


def _is_python_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            first_line = f.readline(256)
    except OSError:
        return True
    return first_line.startswith(b"#!") and b"python" in first_line


def main() -> None:
    """The ``persistd`` command: exec the daemon with our arguments."""
    binary = find_binary()
    if binary is None:
        sys.exit("persistd: no daemon binary in this installation: " + HOW_TO_GET_ONE)
    os.execv(binary, [binary, *sys.argv[1:]])
