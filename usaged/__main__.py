"""`python -m usaged` is the same as the `usaged` command."""

from __future__ import annotations

import sys

from usaged.cli import main

if __name__ == "__main__":
    sys.exit(main())
