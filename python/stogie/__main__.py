"""``python -m stogie``: the same as the ``stogie`` command."""

import sys

from stogie.cli import main

if __name__ == "__main__":
    sys.exit(main())
