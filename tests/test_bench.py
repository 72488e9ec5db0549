"""The fast paths give the plain paths' numbers (importance sampling with a shared seed, the glossy
matrices, log c), the decoder blocks never exceed their budget, the naive baselines compute the same
quantities, and `glossy bench bench.quick=true` produces its table. No timing assertions."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from glossy.cli import bench, bounds
from glossy.cli.evaluate import Plan, importance_sampling, is_blocks, likelihood_matrix, posterior_means
from glossy.models import registry as models
from glossy.models.likelihoods import Bernoulli, DiscretizedLogistic256
from tests.helpers import run_glossy

SHAPE = (1, 6, 6)
CPU = torch.device("cpu")


def _data(n, input_type, seed=0):
    g = torch.Generator().manual_seed(seed)
    if input_type == "binary":
        return torch.bernoulli(torch.full((n, *SHAPE), 0.3), generator=g)
    return (torch.randint(0, 256, (n, *SHAPE), generator=g).float() + 0.5) / 256


CASES = [("vae", "standard", "binary", 7, 3), ("vae", "standard", "binary", 300, 128),
         ("vae", "standard", "binary", 5, 1000), ("vae", "vamp", "gray", 40, 40), ("vae", "vamp", "gray", 7, 3),
         ("hvae", "vamp", "binary", 7, 3), ("hvae", "standard", "binary", 60, 1000),
         ("pixelhvae", "standard", "gray", 7, 3), ("pixelhvae", "vamp", "binary", 4, 1000)]


@pytest.mark.parametrize("name,prior,input_type,n_samples,chunk", CASES)
def test_fast_importance_sampling_equals_the_plain_path_with_a_shared_seed(name, prior, input_type, n_samples, chunk):
    m = models.build(name, prior, SHAPE, input_type, n_components=9).eval()
    x = _data(6, input_type)
    with m.frozen():
        torch.manual_seed(3)
        plain = importance_sampling(m, x, n_samples, Plan(1, chunk, 1, 1), CPU, fast=False)
        torch.manual_seed(3)
        fast = importance_sampling(m, x, n_samples, Plan(1, chunk, 1, 1), CPU, fast=True)
        after = torch.rand(1)
        torch.manual_seed(3)
        importance_sampling(m, x, n_samples, Plan(1, chunk, 1, 1), CPU, fast=False)
        assert torch.equal(after, torch.rand(1))  # both paths leave the global RNG in the same state
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-5)


def test_fast_importance_sampling_groups_points_and_blocks_samples():
    m = models.build("vae", "standard", SHAPE, "binary").eval()
    x = _data(11, "binary")
    with m.frozen():
        torch.manual_seed(5)
        ref = importance_sampling(m, x, 30, Plan(1, 30, 1, 1), CPU, fast=False)
        for block_bytes in (1, 5 * m.eval_bytes_per_sample(), 100 * m.eval_bytes_per_sample()):
            import glossy.cli.evaluate as ev

            old = ev.IS_BLOCK_BYTES
            ev.IS_BLOCK_BYTES = block_bytes
            try:
                torch.manual_seed(5)
                got = importance_sampling(m, x, 30, Plan(1, 30, 1, 1), CPU)
            finally:
                ev.IS_BLOCK_BYTES = old
            np.testing.assert_allclose(got[0].numpy(), ref[0].numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("n_samples", [1, 7, 100, 5000, 100_000])
@pytest.mark.parametrize("chunk", [1, 3, 64, 5000, 10**6])
@pytest.mark.parametrize("bytes_per_sample,block_bytes", [(29_696, 12 * 2**20), (835_104, 12 * 2**20),
                                                          (10**9, 2**20), (1, 10**6), (4000, 4000)])
def test_decoder_blocks_never_exceed_their_budget(n_samples, chunk, bytes_per_sample, block_bytes):
    chunk = min(chunk, n_samples)  # what plan_chunks returns
    group, block = is_blocks(n_samples, chunk, bytes_per_sample, block_bytes)
    assert group >= 1 and block >= 1
    rows = group * block
    assert rows <= chunk  # never more than the plan's chunk, whose memory the budget was checked for
    assert rows * bytes_per_sample <= max(block_bytes, bytes_per_sample)  # within the cache budget (>= 1 row)
    if group > 1:
        assert n_samples <= chunk and block == n_samples  # grouped points keep all their samples in one block


@pytest.mark.parametrize("m,n,d", [(5, 7, 36), (130, 20, 50), (3, 4, 784)])
def test_logistic_matrix_equals_the_plain_whole_table_path(m, n, d):
    g = torch.Generator().manual_seed(m)
    mean = torch.rand(m, d, generator=g).clamp(1 / 512, 1 - 1 / 512)
    log_scale = -4.5 * torch.rand(m, d, generator=g)
    log_scale[0], mean[1] = 0.0, 1 / 512  # the clamps' extremes
    x = (torch.randint(0, 256, (n, d), generator=g).float() + 0.5) / 256
    x[0] = 0.5 / 256
    x[1] = 255.5 / 256  # the outer bins (the tails)
    dist = DiscretizedLogistic256(mean, log_scale)
    plain = dist.log_prob_pairwise_plain(x)
    fast = dist.log_prob_pairwise(x)
    np.testing.assert_allclose(fast.numpy(), plain.numpy(), rtol=2e-6, atol=1e-4)
    per_pair = torch.stack([dist.log_prob(x[j : j + 1]) for j in range(n)], 1)  # [m, n]
    np.testing.assert_allclose(fast.numpy(), per_pair.numpy(), rtol=2e-6, atol=1e-4)


def test_bernoulli_matrix_equals_the_elementwise_log_prob():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 50, generator=g) * 6
    x = torch.bernoulli(torch.full((13, 50), 0.4), generator=g)
    per_pair = torch.stack([Bernoulli(logits).log_prob(x[j]) for j in range(13)], 1)
    np.testing.assert_allclose(Bernoulli(logits).log_prob_pairwise(x).numpy(), per_pair.numpy(), rtol=1e-6,
                               atol=1e-4)


@pytest.mark.parametrize("input_type", ["binary", "gray"])
def test_glossy_matrix_and_log_c_equal_the_plain_paths(input_type):
    m = models.build("vae", "standard", SHAPE, input_type).eval()
    x = _data(40, input_type)
    with m.frozen():
        z = posterior_means(m, x, CPU)
        one_block = likelihood_matrix(m, x, z, Plan(1, 1, 40, 40), CPU)
        blocks = likelihood_matrix(m, x, z, Plan(1, 1, 7, 9), CPU)
        dist = m.decode(z)
        plain = (dist.log_prob_pairwise_plain(x.flatten(1)) if input_type == "gray" else
                 torch.stack([dist.log_prob(x[j].flatten()) for j in range(40)], 1))
        log_px = importance_sampling(m, x, 50, Plan(1, 50, 1, 1), CPU, fast=False)[0]
    for L in (one_block, blocks):
        np.testing.assert_allclose(L.numpy(), plain.numpy(), rtol=2e-6, atol=1e-4)
        np.testing.assert_allclose(bounds.log_c(L, log_px).numpy(), bounds.log_c(plain, log_px).numpy(),
                                   rtol=1e-6, atol=1e-4)


def test_vampprior_one_product_form_equals_the_componentwise_density():
    m = models.build("hvae", "vamp", SHAPE, "binary", n_components=11)
    z = torch.randn(4, 5, m.prior.dim) * 2
    direct = m.prior.log_prob_direct(z)
    np.testing.assert_allclose(m.prior.log_prob(z).detach().numpy(), direct.detach().numpy(), rtol=1e-5, atol=1e-4)
    with m.frozen():
        np.testing.assert_allclose(m.prior.log_prob(z).numpy(), direct.detach().numpy(), rtol=1e-5, atol=1e-4)
    loss = m.prior.log_prob(z).sum()  # outside frozen() the pseudo-inputs get gradients
    loss.backward()
    assert m.prior.pseudo_inputs.grad is not None and m.prior.pseudo_inputs.grad.abs().sum() > 0


def test_naive_baselines_compute_the_same_quantities():
    m = models.build("vae", "vamp", SHAPE, "binary", n_components=9).eval()
    with torch.no_grad():  # q(z|x) = N(0, I) = p(z) and a nearly flat decoder: IS has almost no variance
        for p in [*m.q_z_mean.parameters(), *m.q_z_logvar.parameters()]:
            p.zero_()
        for p in m.p_x_layers.parameters():
            p.mul_(0.1)
    x = _data(3, "binary")
    with m.frozen():
        torch.manual_seed(0)
        fast = importance_sampling(m, x, 250, Plan(1, 250, 1, 1), CPU)[0].numpy()
        z = posterior_means(m, x, CPU)
        L = likelihood_matrix(m, x, z, Plan(1, 1, 3, 3), CPU)
    torch.manual_seed(1)
    naive = bench.naive_importance_sampling(m, x, 250, 100, CPU)  # chunks 100, 100, 50
    np.testing.assert_allclose(naive, fast, atol=0.01)  # different draws of a near-constant weight
    assert "log_prob" not in vars(m.prior)  # the reference prior is undone
    np.testing.assert_allclose(bench.naive_likelihood_matrix(m, x, z, 2, CPU).numpy(), L.numpy(), rtol=1e-5,
                               atol=1e-3)


def test_mac_counts_agree_with_the_models_decoder_macs():
    for name in ("vae", "hvae", "pixelhvae"):
        m = models.build(name, "standard", (1, 28, 28), "binary")
        c = bench.model_costs(m, CPU)
        assert c.decoder + c.prior == m.decoder_macs()  # p(x|z) and p(z1|z2): the per-sample floor
        assert c.sample >= m.decoder_macs() and c.point > 0 and c.train_image > c.point
    assert bench.model_costs(models.build("vae", "standard", (1, 28, 28), "binary"), CPU).sample == 439_200
    vamp = models.build("vae", "vamp", (1, 28, 28), "binary")
    assert bench.model_costs(vamp, CPU).sample == vamp.decoder_macs() + 2 * 40 * 500


@pytest.mark.slow  # a subprocess bench run
def test_glossy_bench_quick_mode_writes_its_table(tmp_path):
    p = run_glossy(["bench", "bench.quick=true", f"results_dir={tmp_path / 'res'}"], tmp_path, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    df = pd.read_csv(tmp_path / "res" / "bench.csv")
    ops = set(df["operation"])
    assert {"train_step", "importance_sampling", "glossy_matrix_bernoulli", "glossy_matrix_logistic",
            "e2e_eval"} <= ops
    assert set(df[df["operation"] == "importance_sampling"]["prior"]) == {"standard", "vamp"}
    assert set(df["model"]) == {"vae", "hvae", "pixelhvae"}
    for col in ("throughput", "floor_flop_per_item", "pct_of_peak", "matmul_peak_gflops"):
        assert df[col].map(lambda v: math.isfinite(v) and v > 0).all(), col
    assert df[df["operation"] != "e2e_eval"]["speedup"].map(lambda v: math.isfinite(v) and v > 0).all()
    assert df["quick"].all()
    targeted = df[df["target"].notna() & (df["target"] != "")]
    assert len(targeted) == 4 and targeted["met"].map(lambda v: str(v).startswith(("met", "missed"))).all()
    md = (tmp_path / "res" / "bench.md").read_text()
    assert "quick mode" in md and "GFLOP/s" in md and "| importance_sampling | vae | vamp |" in md
    assert "EXTRAPOLATED" in md  # the quick end-to-end run is small, so it is labelled as extrapolated
    assert "| train_step | vae | standard |" in p.stdout
    assert not list((tmp_path / "res").glob(".*.tmp"))  # atomic writes leave no temporaries
