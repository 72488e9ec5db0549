"""Remove the percentile-bootstrap intervals of the glossy statistics and lower bounds from result.json files
written before glossy switched to the jackknife (results/coverage.md measured the bootstrap's coverage; in 26
of the 27 real runs the training-candidate std lay outside its own interval). The NLL's percentile interval of
a mean is kept. What was removed is named in the file (`intervals_removed`); `glossy eval checkpoint=RUN`
computes the jackknife intervals again where the checkpoint still exists.

    python3 scripts/drop_bootstrap_intervals.py results/runs

scripts/collect_results.sh runs it on every collected result (standard library only, any python3)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

STATS = ("glossy_max", "glossy_std", "lower_bound")


def migrate(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    if "interval_method" in r or "bootstrap" not in r:
        return []
    gone = [k for k in r if k.endswith("_ci") and k.startswith(STATS)]
    for k in gone:
        del r[k]
    r["interval_method"] = "nll: percentile bootstrap of the mean"
    r["interval_level"] = r.pop("bootstrap_level")
    r["intervals_removed"] = {"keys": gone, "why": "percentile bootstrap, measured invalid for these statistics "
                              "(results/coverage.md); glossy eval gives jackknife intervals"}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".result.", suffix=".tmp")  # standard library only
    with os.fdopen(fd, "w") as f:
        json.dump(r, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return gone


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="*", default=["results/runs"], help="folders of runs (default: %(default)s)")
    for root in ap.parse_args(argv).roots:
        for f in sorted(Path(root).glob("*/result.json")):
            gone = migrate(f)
            print(f"{f}: {len(gone)} intervals removed" if gone else f"{f}: unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
