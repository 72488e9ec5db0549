"""The experiment scripts under scripts/ compute what they say."""

from __future__ import annotations

import pytest
import torch

from glossy_models.likelihoods import DiscretizedLogistic256
from scripts import logistic_variants


def test_logistic_variants_normalised_is_glossys_likelihood_and_the_others_drop_the_tails():
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(3, 50, generator=g)
    log_scale = torch.empty(3, 50).uniform_(-4.5, 0.0, generator=g)
    x = torch.randint(1, 255, (3, 50), generator=g) / 256.0  # inner bins ...
    x[:, :5], x[:, 5:10] = 0.0, 255 / 256  # the outer bins, where the variants differ
    ours = DiscretizedLogistic256(loc, log_scale).log_prob(x)
    norm = logistic_variants.pixel_log_prob(x, loc, log_scale, "normalised")
    torch.testing.assert_close(norm.sum(-1), ours, rtol=1e-5, atol=1e-3)
    no_tails = logistic_variants.pixel_log_prob(x, loc, log_scale, "no tails")
    ref = logistic_variants.pixel_log_prob(x, loc, log_scale, "reference")
    inner = slice(10, None)
    torch.testing.assert_close(no_tails[:, inner], norm[:, inner], rtol=1e-4, atol=1e-4)
    assert (no_tails[:, :10] < norm[:, :10]).all()  # the tails are missing from the outer bins
    assert (ref >= torch.log(torch.tensor(1e-7)) - 1e-6).all()
    # where the bin probability is well above float32 rounding, the reference's formula is no tails + 1e-7
    big = no_tails > -10
    torch.testing.assert_close(ref[big], torch.log(no_tails[big].exp() + 1e-7), rtol=1e-4, atol=1e-4)


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


@pytest.mark.slow  # a trained run and a measurement script
def test_ba_speed_fits_the_heldout_prior_of_a_run_with_and_without_the_active_set(quick_cfg, tmp_path, capsys):
    from glossy_cli.train import train
    from scripts import ba_speed

    run = tmp_path / "run"
    run.mkdir()
    train(quick_cfg, run, show_progress=False)
    cache = tmp_path / "aug.pt"
    assert ba_speed.main([str(run), "--samples", "5", "--cache", str(cache), "--threads", "1", "--tol", "1e-8",
                          "--max-iter", "3000"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |")]
    assert [r[1].strip() for r in rows] == ["off", "on"]
    nll_off, nll_on = (float(r[4]) for r in rows)
    assert nll_on == pytest.approx(nll_off, abs=1e-6)  # the same fit, whichever way it was computed
    assert torch.load(cache, weights_only=True).shape[0] == 1 + len(torch.load(run / "points.pt")["log_c_train"])
