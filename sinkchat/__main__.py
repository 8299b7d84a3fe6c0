"""``python -m sinkchat``."""

import sys

from sinkchat.cli import main

sys.exit(main())
