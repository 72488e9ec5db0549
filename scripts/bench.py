#!/usr/bin/env python
"""Thin wrapper: `python scripts/bench.py [overrides]` is `glossy bench [overrides]`
(e.g. `python scripts/bench.py bench.quick=true`, `python scripts/bench.py bench.e2e_points=2000`)."""

import sys

from glossy.cli.main import main

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
