"""The committed results: what a reader of results/ is told must hold of the files themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RUNS = Path(__file__).resolve().parents[1] / "results" / "runs"
RESULTS = sorted(RUNS.glob("*/result.json"))


def test_there_are_committed_results():
    assert len(RESULTS) >= 20, f"expected the committed Table-1 runs under {RUNS}"


@pytest.mark.parametrize("path", RESULTS, ids=[p.parent.name for p in RESULTS])
def test_every_committed_interval_contains_its_estimate(path):
    r = json.loads(path.read_text())
    intervals = {k: v for k, v in r.items() if k.endswith("_ci")}
    assert intervals, f"{path}: no interval at all"
    assert "nll_ci" in intervals
    for key, ci in intervals.items():
        estimate = r[key.removesuffix("_ci")]
        lo, hi = ci
        assert lo <= estimate <= hi, f"{path.parent.name}: {key} = [{lo}, {hi}] does not contain {estimate}"
    # an interval's method and level are named in the file
    assert "interval_method" in r and 0 < r["interval_level"] < 1
