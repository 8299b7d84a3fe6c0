"""``python -m sinkchat`` and the ``sinkchat`` command.

Ctrl-C while Python is still importing the command line (its first few hundred
milliseconds) comes before :func:`sinkchat.cli.main` can catch it; it is caught here, so
it ends quietly with status 130 as it does later on.
"""

import sys


def main() -> int:
    try:
        from sinkchat.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
