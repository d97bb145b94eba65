"""The ``python -m repfuse`` program: runs a command and writes what it says to the terminal."""

from __future__ import annotations

import sys
from typing import Sequence

from .cli import run


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``argv`` (default: the program's arguments); its text to stdout, an error to stderr."""
    outcome = run(argv)
    if outcome.error:
        print(outcome.error, file=sys.stderr)
    else:
        print(outcome.text)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
