"""``python -m tui``: the same as ``sinkchat run``."""

import sys

from sinkchat.cli import main

sys.exit(main(["run", *sys.argv[1:]]))
