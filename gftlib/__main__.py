"""``python -m gftlib``: the ``gft`` command (see :mod:`gftlib.cli`)."""

import sys

from gftlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
