"""``python -m harness`` (bench/run runs it so, with bench/ on the path)."""

import sys

from harness.cli import main

sys.exit(main())
