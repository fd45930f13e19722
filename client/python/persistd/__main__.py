"""``python -m persistd``: the same program as ``persistctl`` (persistd.cli)."""

from __future__ import annotations

import sys

from persistd.cli import main

if __name__ == "__main__":
    sys.exit(main())
