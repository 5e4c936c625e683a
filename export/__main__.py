"""``python -m export``: the export command line (`export.cli`, also ``gp-serve export``)."""

import sys

from gp_serve.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
