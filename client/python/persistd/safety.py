"""Safe load: which globals a pickle may name when the caller said
``allow_pickle=False``.

Unpickling calls whatever callable a file names, so ``load`` of an untrusted
file can run any code (joblib calls that out of scope). With
``allow_pickle=False`` only what an array-and-containers value needs is
resolved: NumPy arrays, dtypes and scalars, and builtin containers and
scalars. Every other global is refused *before* its module is imported
(importing alone can run code), with an error that names it. Callers admit
more with ``allowed_globals``.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from collections.abc import Iterable
from typing import Any

#: "module.name" of every global a value of arrays, dtypes, numpy scalars
#: and builtin containers/scalars pickles to, for protocols 0-5 and numpy
#: 1.x and 2.x spellings. Each only builds data; none runs user code.
SAFE_GLOBALS = frozenset(
    {
        # numpy: array types (wrapper 'subclass'), dtypes, scalars, object
        # arrays' nested pickles.
        "numpy.ndarray",
        "numpy.memmap",
        "numpy.matrix",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        # builtins that only build values (protocols 0-2 name them too).
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.complex",
        "builtins.slice",
        "builtins.range",
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.str",
        "builtins.object",
        "copyreg._reconstructor",
        "_codecs.encode",
        "collections.OrderedDict",
    }
)


def qualified_name(module: str, name: str) -> str:
    """The global as Python 3 names it (pickles of protocol < 3 use
    Python 2 names; the unpickler maps them the same way)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return "%s.%s" % (module, name)


def allowlist(extra: Iterable[Any]) -> frozenset[str]:
    """SAFE_GLOBALS plus the caller's: "module.name" strings, or the
    classes and functions themselves."""
    names = set(SAFE_GLOBALS)
    for item in extra:
        if isinstance(item, str):
            names.add(item)
        else:
            names.add("%s.%s" % (item.__module__, item.__qualname__))
    return frozenset(names)


def refuse(module: str, name: str, filename: str) -> pickle.UnpicklingError:
    qualified = qualified_name(module, name)
    return pickle.UnpicklingError(
        "persistd: load(%r, allow_pickle=False) refuses the global '%s': only "
        "NumPy arrays, dtypes and builtin containers and scalars are restored. "
        "If you trust this file, pass allowed_globals=['%s'] (or allow_pickle=True)"
        % (filename, qualified, qualified)
    )
