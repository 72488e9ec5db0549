#!/usr/bin/env python
"""The benchmark (glossy_cli/bench): how close training, importance sampling and the glossy matrix run to the
machine's limits, in one run on the current device.

    python scripts/bench.py [--quick] [--threads N] [--no-e2e] [--device cuda] [--results-dir DIR] ...

`--help` lists every flag with its default; docs/performance.md says what each column means."""

import sys

from glossy_cli.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
