"""``python -m gp_serve``: the ``gp-serve`` command (`gp_serve.cli`)."""

from __future__ import annotations

import sys

from gp_serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
