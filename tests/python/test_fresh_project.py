"""The end-to-end test of the README on a fresh machine (tests/e2e/fresh_project.sh):
a new user folder and venv, the session's wheel, the worker-pool example
from that folder, one shared model, and the pool's leases in persistctl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "tests" / "e2e" / "fresh_project.sh"


def test_readme_from_nothing_to_a_shared_worker_pool(wheel: Path) -> None:
    for tool in ("curl", "python3"):
        if shutil.which(tool, path="/usr/bin:/bin") is None:
            pytest.skip("%s is not in /usr/bin or /bin, where the README's user has it" % tool)
    result = subprocess.run(["bash", str(SCRIPT), str(wheel)], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "ok: 4 workers share one model" in result.stdout, result.stdout[-3000:]
