"""The experiment scripts under scripts/ compute what they say."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow  # a trained run and a measurement script
def test_glossy_forensics_reproduces_the_runs_own_statistics_and_checks_every_paper_row(quick_cfg, tmp_path):
    import json

    from glossy_cli.train import train
    from scripts import glossy_forensics

    run = tmp_path / "run"
    run.mkdir()
    r = train(quick_cfg, run, show_progress=False)
    assert (run / "points.pt").is_file()
    out = tmp_path / "forensics.md"
    assert glossy_forensics.main([str(run), "--out", str(out)]) == 0
    text = out.read_text()
    info, df = glossy_forensics.forensics(run, None, 10)
    assert info["tau"].startswith("points.pt")  # the evaluation's own log p^(x_j), not a new estimate
    rows = df.set_index("reading")
    # the text's reading and the training candidates are what glossy eval computed, to rounding
    assert rows.loc["test (the text)", "max"] == pytest.approx(r["glossy_max_test"], abs=1e-3)
    assert rows.loc["test (the text)", "std"] == pytest.approx(r["glossy_std_test"], abs=1e-3)
    assert rows.loc["train (all)", "max"] == pytest.approx(r["glossy_max_train"], abs=1e-3)
    assert rows.loc["train (all)", "std"] == pytest.approx(r["glossy_std_train"], abs=1e-3)
    assert rows.loc["train (all)", "M"] == json.loads((run / "result.json").read_text())["n_candidates_train"]
    # leaving each candidate's own image out can only lower its log c
    assert rows.loc["test, own image left out", "mean"] < rows.loc["test (the text)", "mean"]
    for reading in rows.index:
        assert f"| {reading} |" in text
    assert "27 of the paper's 36 rows violate it" in text
    assert "| mnist | vae | standard | 10000 | 15.7 | 34.3 | 12.5 | yes |" in text
    assert "| mnist | pixelhvae | standard | 10000 | 7.3 | 3.0 | 8.3 | no |" in text
    assert glossy_forensics.main([str(tmp_path / "nosuch")]) == 2


def test_drop_bootstrap_intervals_keeps_the_nll_interval_and_names_what_it_removed(tmp_path):
    import json

    from scripts import drop_bootstrap_intervals as drop

    old = {"nll": 80.0, "nll_ci": [79.5, 80.5], "glossy_std_train": 34.2, "glossy_std_train_ci": [36.8, 37.3],
           "glossy_max": 2.0, "glossy_max_ci": [1.0, 3.0], "lower_bound_test_ci": [1.0, 2.0], "bootstrap": 100,
           "bootstrap_level": 0.95, "complete": True}
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "result.json"
    path.write_text(json.dumps(old))
    assert drop.main([str(tmp_path)]) == 0
    new = json.loads(path.read_text())
    assert new["nll_ci"] == [79.5, 80.5] and new["interval_level"] == 0.95
    assert not [k for k in new if k.endswith("_ci") and k != "nll_ci"]
    assert sorted(new["intervals_removed"]["keys"]) == ["glossy_max_ci", "glossy_std_train_ci", "lower_bound_test_ci"]
    before = path.read_text()
    assert drop.migrate(path) == [] and path.read_text() == before  # once only; new results are never touched
    assert list(tmp_path.joinpath("run").iterdir()) == [path]  # no temporary file left


COVERAGE_STUDIES = ["coverage_seed0", "coverage_seed1", "coverage_n200_seed0", "coverage_n200_seed1"]


def test_coverage_report_regenerates_the_committed_report_from_the_studies_files(tmp_path):
    """results/coverage.md holds no typed number: it is what scripts/coverage_report.py writes from the committed
    summaries, with the hand-written findings below the marker kept."""
    from pathlib import Path

    from scripts import coverage_report

    results = Path(__file__).resolve().parents[1] / "results"
    committed = (results / "coverage.md").read_text()
    out = tmp_path / "coverage.md"
    out.write_text(committed)
    assert coverage_report.main([str(results / s) for s in COVERAGE_STUDIES] + ["--out", str(out)]) == 0
    assert out.read_text() == committed
    assert coverage_report.FINDINGS in committed
    # without the old report there are no findings, and the tables are the same
    fresh = tmp_path / "fresh.md"
    assert coverage_report.main([str(results / s) for s in COVERAGE_STUDIES] + ["--out", str(fresh)]) == 0
    assert committed.startswith(fresh.read_text()) and coverage_report.FINDINGS not in fresh.read_text()


def test_coverage_report_pairs_the_reruns_and_flags_the_methods_below_90_percent(tmp_path, capsys):
    import json

    import pandas as pd

    from scripts import coverage_report

    def study(name, seed, n, cover):
        rows = [{"statistic": "glossy_std_train", "method": "reported", "coverage": cover, "mc_error": 0.015,
                 "below": 0.02, "above": 0.03, "contains_estimate": 1.0, "mean_width": 0.16, "target": 0.41,
                 "sd_over_sets": 0.04},
                {"statistic": "glossy_std_train", "method": "percentile bootstrap", "coverage": 0.85,
                 "mc_error": 0.025, "below": 0.01, "above": 0.14, "contains_estimate": 1.0, "mean_width": 0.14,
                 "target": 0.41, "sd_over_sets": 0.04},
                {"statistic": "nll_ba_heldout", "method": "normal", "coverage": 0.95, "mc_error": 0.015,
                 "below": 0.03, "above": 0.02, "contains_estimate": 1.0, "mean_width": 1.9, "target": 79.8,
                 "sd_over_sets": 0.48}]
        pd.DataFrame(rows).to_csv(tmp_path / f"{name}_summary.csv", index=False)
        meta = {"seed": seed, "sets": 200, "n_test": n, "is_samples": 100, "max_candidates": 2000, "groups": 20,
                "bootstrap": 100, "heldout_fit": 500, "seconds": 600, "torch": "2.x", "python": "3.x",
                "command": f"python scripts/coverage_study.py /runs/x --seed {seed}", "run_dir": "/runs/x",
                "model": {"run": "x", "nll": 81.0}}
        (tmp_path / f"{name}_meta.json").write_text(json.dumps(meta))
        return str(tmp_path / name)

    a, b = study("a", 0, 1000, 0.95), study("b", 1, 1000, 0.98)
    assert coverage_report.main([a, b]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("| glossy_std_train | 0.950"))
    assert "0.980 ± 0.015" in row and "| 1.41 |" in row  # |0.95 - 0.98| / sqrt(2) / 0.015
    assert "| nll_ba_heldout | 0.950 ± 0.015" in text  # a statistic with one method counts as reported
    assert "`python scripts/coverage_study.py RUN --seed 0`" in text
    assert "Below 0.90 somewhere: percentile bootstrap for glossy_std_train (0.850 at N=1000 seed 0)" in text
    assert coverage_report.main([str(tmp_path / "missing")]) == 2
    assert "coverage_report:" in capsys.readouterr().err


def _device_rows(*args: str, env: dict[str, str] | None = None, timeout: int = 30):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "device_rows.sh"
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_device_rows_refuses_an_unknown_row_set_and_a_machine_without_a_gpu_in_one_line(tmp_path):
    import shutil

    p = _device_rows("tables", env={"OUT": str(tmp_path / "out")})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "pixelhvae or cifar10" in p.stderr
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is here: the no-GPU refusal is not reachable")
    p = _device_rows("pixelhvae", env={"OUT": str(tmp_path / "out")})
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "no GPU" in p.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the refusal


@pytest.mark.slow  # two PixelHVAE trainings (one epoch of one batch each) on the CPU
def test_device_rows_trains_both_priors_with_every_candidate_and_brings_back_no_checkpoint(tmp_path):
    import json
    import sys
    from pathlib import Path

    from tests.test_datasets import real_data

    data = real_data("frey")
    out, runs = tmp_path / "out", tmp_path / "runs"
    extra = ("train.epochs=1 train.warmup=1 train.batches_per_epoch=1 train.val_points=100 train.grid=0 "
             "eval.is_samples=2 eval.max_points=4 eval.heldout=false")
    p = _device_rows("pixelhvae", str(data), timeout=1200, env={
        "OUT": str(out), "RUNS": str(runs), "SEEDS": "3", "EXTRA": extra, "DEVICE_ROWS_ALLOW_CPU": "1",
        "GLOSSY": str(Path(sys.executable).parent / "glossy"), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    finished = sorted(d.name for d in (out / "collected" / "runs").iterdir())
    assert [n.split("__")[0] for n in finished] == ["frey-pixelhvae-standard-seed3", "frey-pixelhvae-vamp-seed3"]
    for name in finished:
        r = json.loads((out / "collected" / "runs" / name / "result.json").read_text())
        assert r["eval_config"]["autoregressive_max_candidates"] is None
        assert r["n_candidates_train"] == 1565  # every training frame, not the default cap of 100
    brought = [f.name for f in out.rglob("*") if f.is_file()]
    assert not [n for n in brought if n.endswith(".pt")], brought
    assert "finished: " in (out / "summary.md").read_text()
    assert len(list(runs.rglob("*.pt"))) >= 2  # the checkpoints stay where the runs ran


def test_eval_floor_refuses_a_missing_run_in_one_line(tmp_path):
    script = str(REPO / "scripts" / "eval_floor.py")
    p = subprocess.run([sys.executable, script, str(tmp_path / "nowhere"), "--no-eval"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "eval_floor: checkpoint=" in p.stderr, p.stderr
