"""`python -m covergen` and the `covergen` command: start-up itself answers Ctrl-C.

The command line's imports happen inside ``run``, so a Ctrl-C while Python loads them
ends with "interrupted" and status 130, like one at any later moment, not a traceback.
"""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
