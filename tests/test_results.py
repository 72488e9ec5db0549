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


@pytest.mark.parametrize("path", RESULTS, ids=[p.parent.name for p in RESULTS])
def test_every_committed_config_says_what_its_result_was_made_with(path):
    """config.yaml beside a result.json names the same run (dataset, model, prior, seed) and the same eval.*
    settings that the result's numbers were computed with (eval_config), so a reader of either is told the same."""
    from omegaconf import OmegaConf

    config = path.parent / "config.yaml"
    assert config.is_file(), f"{path.parent.name}: no config.yaml"
    cfg, r = OmegaConf.to_container(OmegaConf.load(config)), json.loads(path.read_text())
    assert (cfg["dataset"]["name"], cfg["model"]["name"], cfg["prior"]["name"], cfg["seed"]) == \
        (r["dataset"], r["model"], r["prior"], r["seed"]), path.parent.name
    assert cfg["eval"] == r["eval_config"], {k: (cfg["eval"].get(k), r["eval_config"].get(k))
                                             for k in {*cfg["eval"], *r["eval_config"]}
                                             if cfg["eval"].get(k) != r["eval_config"].get(k)}


@pytest.mark.parametrize("path", RESULTS, ids=[p.parent.name for p in RESULTS])
def test_no_committed_bound_over_every_prior_exceeds_an_nll_glossy_exhibits(path):
    """`lower_bound` (NLL minus the max of log c over the test images' own codes, the paper's text) stands for
    Theorem 2's bound over every prior: it must stay at or below the model's NLL and those of both re-weighted
    priors on the same images (glossy.evaluation.bound_checks warns where a new evaluation breaks this)."""
    r = json.loads(path.read_text())
    for nll in ("nll", "nll_ba", "nll_ba_heldout"):
        if r.get(nll) is not None:
            assert r["lower_bound"] <= r[nll], f"{path.parent.name}: lower_bound {r['lower_bound']} > {nll} {r[nll]}"
