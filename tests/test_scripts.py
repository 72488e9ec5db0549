"""The experiment scripts under scripts/ compute what they say."""

from __future__ import annotations

import pytest


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
