"""The benchmark (glossy_cli/bench, scripts/bench.py): its naive baselines compute what glossy computes, its flop
counts match the models', its settings are checked, and its quick mode writes its table. No timing assertions."""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from glossy.candidates import likelihood_matrix, posterior_means
from glossy.importance import importance_sampling
from glossy.memory import Plan
from glossy_cli.bench import baselines, measure, settings
from glossy_models import registry as models
from tests.helpers import REPO, images

SHAPE = (1, 6, 6)
CPU = torch.device("cpu")


def test_naive_baselines_compute_the_same_quantities():
    m = models.build("vae", "vamp", SHAPE, "binary", n_components=9).eval()
    with torch.no_grad():  # q(z|x) = N(0, I) = p(z) and a nearly flat decoder: IS has almost no variance
        for p in [*m.q_z_mean.parameters(), *m.q_z_logvar.parameters()]:
            p.zero_()
        for p in m.p_x_layers.parameters():
            p.mul_(0.1)
    x = images(3)
    with m.frozen():
        torch.manual_seed(0)
        fast = importance_sampling(m, x, 250, Plan(1, 250, 1, 1), CPU)[0].numpy()
        z = posterior_means(m, x, CPU)
        L = likelihood_matrix(m, x, z, Plan(1, 1, 3, 3), CPU)
    torch.manual_seed(1)
    naive = baselines.naive_importance_sampling(m, x, 250, 100, CPU)  # chunks 100, 100, 50
    np.testing.assert_allclose(naive, fast, atol=0.01)  # different draws of a near-constant weight
    assert "log_prob" not in vars(m.prior)  # the reference prior is undone
    np.testing.assert_allclose(baselines.naive_likelihood_matrix(m, x, z, 2, CPU).numpy(), L.numpy(), rtol=1e-5,
                               atol=1e-3)


def test_mac_counts_agree_with_the_models_decoder_macs():
    for name in ("vae", "hvae", "pixelhvae"):
        m = models.build(name, "standard", (1, 28, 28), "binary")
        c = measure.model_costs(m, CPU)
        assert c.decoder + c.prior == m.decoder_macs()  # p(x|z) and p(z1|z2): the per-sample floor
        assert c.sample >= m.decoder_macs() and c.point > 0 and c.train_image > c.point
    assert measure.model_costs(models.build("vae", "standard", (1, 28, 28), "binary"), CPU).sample == 439_200
    vamp = models.build("vae", "vamp", (1, 28, 28), "binary")
    assert measure.model_costs(vamp, CPU).sample == vamp.decoder_macs() + 2 * 40 * 500


def test_bad_settings_are_refused_in_one_line():
    st = settings.parse_settings(["--threads", "2", "--no-e2e", "--note", "quiet: yes", "--note", "b"])
    assert st.threads == 2 and st.e2e is False and st.notes == ["quiet: yes", "b"] and st.quick is False
    assert settings.parse_settings(["--quick", "--results-dir", "/tmp/r"]).results_dir == "/tmp/r"
    for args, msg in [(["--threads", "abc"], "argument --threads: invalid int value: 'abc'"),
                      (["--repeats", "0"], "--repeats 0: must be at least 1"),
                      (["--frob", "1"], "unrecognized arguments: --frob 1"),
                      (["threads=2"], "unrecognized arguments: threads=2"),
                      (["--threads"], "argument --threads: expected one argument")]:
        with pytest.raises(ValueError) as e:
            settings.parse_settings(args)
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_bad_flag_is_one_line_and_exit_status_2():
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--repeats", "0"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "bench: error: --repeats 0: must be at least 1", p.stderr


@pytest.mark.slow  # a subprocess bench run
def test_quick_mode_writes_its_table(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--quick",
                        "--results-dir", str(tmp_path / "res")], capture_output=True, text=True, timeout=240,
                       cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "2"})  # rows at 1 and at 2 threads
    assert p.returncode == 0, p.stdout + p.stderr
    df = pd.read_csv(tmp_path / "res" / "bench.csv")
    ops = set(df["operation"])
    assert {"train_step", "importance_sampling", "glossy_matrix_bernoulli", "glossy_matrix_logistic",
            "e2e_eval", "train_step_logistic", "importance_sampling_logistic"} <= ops
    assert set(df[df["operation"] == "importance_sampling"]["prior"]) == {"standard", "vamp"}
    own = ~df["operation"].isin(["intervals_jackknife", "importance_sampling_pythae", "best_prior_heldout"])
    assert set(df[own]["model"]) == {"vae", "hvae", "pixelhvae"}
    # glossy's importance sampling of a pythae model against pythae's own get_nll (the test extra installs pythae)
    assert set(df[df["operation"] == "importance_sampling_pythae"]["model"]) == {"pythae-vae"}
    assert {"intervals_jackknife", "best_prior_heldout"} <= ops  # no model of their own (model "any")
    for col in ("throughput", "floor_flop_per_item", "pct_of_peak", "matmul_peak_gflops"):
        assert df[col].map(lambda v: math.isfinite(v) and v > 0).all(), col
    assert df[df["operation"] != "e2e_eval"]["speedup"].map(lambda v: math.isfinite(v) and v > 0).all()
    assert df["quick"].all()
    assert set(df["threads"]) == {1, 2} and (df[df["threads"] == 2]["operation"] == "e2e_eval").sum() == 1
    twins = df[(df["operation"] == "importance_sampling") & (df["prior"] == "vamp")]["vs_standard_twin"]
    assert len(twins) == 6 and twins.map(lambda v: math.isfinite(v) and v > 0).all()
    scaling = df[(df["threads"] == 2) & (df["operation"] != "e2e_eval")]["vs_1_thread"]
    assert len(scaling) == 16 and scaling.map(lambda v: math.isfinite(v) and v > 0).all()
    e2e = df[df["operation"] == "e2e_eval"].iloc[0]
    assert e2e["predicted_s"] > 0 and math.isfinite(e2e["prediction_error_pct"])
    assert set(df["matmul_peak_gflops"].map(lambda v: v > 0)) == {True}
    md = (tmp_path / "res" / "bench.md").read_text()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("|")]
    assert "quick mode" in md and "GFLOP/s" in md and ["importance_sampling", "vae", "vamp"] in [c[:3] for c in cells]
    assert "EXTRAPOLATED" in md  # the quick end-to-end run is small, so it is labelled as extrapolated
    printed = [[c.strip() for c in line.split("|")[1:-1]] for line in p.stdout.splitlines() if line.startswith("|")]
    assert ["train_step", "vae", "standard", "binary", "1"] in [c[:5] for c in printed] and "at 2 thread(s)" in md
    assert not list((tmp_path / "res").glob(".*.tmp"))  # atomic writes leave no temporaries
