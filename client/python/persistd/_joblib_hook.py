"""Register persistd's joblib.Memory backend without importing joblib early.

``import persistd`` should make ``joblib.Memory(..., backend="persistd")``
work, whatever the order of the user's imports, but importing joblib.memory
costs about 80 ms and joblib is not a dependency of persistd. So: if
``joblib.memory`` is imported already, register now; otherwise a one-shot
import hook registers the backend right after joblib.memory is executed.
The hook wraps nothing else and removes itself at its first use.
``import persistd.memory`` registers explicitly, hook or not.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_TARGET = "joblib.memory"


def install() -> None:
    """Arrange for the backend to be registered (see the module docstring)."""
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _register() -> None:
    try:
        importlib.import_module("persistd.memory")  # registers on import
    except Exception as exc:  # never break the user's import of joblib
        warnings.warn(
            "persistd could not register its joblib.Memory backend: %s" % exc,
            RuntimeWarning,
            stacklevel=2,
        )


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of joblib.memory's real spec."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)  # one shot; and the search below skips us
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec: importlib.machinery.ModuleSpec | None = (
                find(fullname, path, target) if find is not None else None
            )
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    """The real loader, plus registration once the module has run."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._inner.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _register()

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...
        return getattr(self._inner, name)
