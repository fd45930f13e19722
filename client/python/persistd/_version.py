"""The client's version: the one place it is written for Python.

The wheel's metadata reads it (pyproject.toml, dynamic version), the
package exports it as ``persistd.__version__``, and every call names it to
the daemon. The daemon's own version (server/daemon_options.h,
kPersistdVersion) is checked against it by the test suite
(test_persistctl.py), since they ship together in the wheel.
"""

__version__ = "0.1.0"
