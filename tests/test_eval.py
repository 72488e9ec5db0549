"""Evaluation against closed forms and brute force: IS NLL on a linear-Gaussian model, the blocked
glossy matrix, the chunk planner, and `evaluate` on a user's own model."""

import contextlib
import math

import glossy_models as models
import numpy as np
import pytest
import torch
from glossy_models.base import LatentVariableModel, reparameterize
from glossy_models.priors import log_normal_diag, log_standard_normal
from torch import nn

from glossy_cli.errors import GlossyError
from glossy_cli.evaluate import Plan, evaluate, importance_sampling, likelihood_matrix, make_plan, plan_chunks


class LinearGaussian(LatentVariableModel):
    """p(z) = N(0, I_k), x | z ~ N(W z + b, s^2 I_d): the marginal is N(b, W W^T + s^2 I) in closed form.
    The encoder is the exact posterior, deliberately mis-scaled, so importance sampling has work to do."""

    def __init__(self, d=5, k=2, s=0.7, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.input_shape, self.input_type, self.latent_dim = (1, 1, d), "continuous", k
        self.W = torch.randn(d, k, generator=g, dtype=torch.float64)
        self.b = torch.randn(d, generator=g, dtype=torch.float64)
        self.s2 = s * s
        prec = torch.eye(k, dtype=torch.float64) + self.W.T @ self.W / self.s2
        self.post_cov = torch.linalg.inv(prec)
        self.prior = nn.Identity()
        self.prior.frozen = contextlib.nullcontext

    def _q(self, x):
        mean = ((x.flatten(-3) - self.b) @ self.W / self.s2) @ self.post_cov.T * 0.9  # mis-scaled mean
        logvar = torch.log(torch.diagonal(self.post_cov) * 1.5).expand_as(mean)  # inflated, diagonal
        return mean, logvar

    def sample_posterior(self, x, n):
        return reparameterize(*self._q(x.double()), n)

    def log_prior(self, z):
        return log_standard_normal(z)

    def log_likelihood(self, x, z):
        mean = z @ self.W.T + self.b
        return log_normal_diag(x.flatten(-3).double(), mean, torch.full_like(mean, math.log(self.s2)))

    def posterior_mean(self, x):
        return self._q(x.double())[0]

    def log_likelihood_matrix(self, x, z):
        return self.log_likelihood(x.unsqueeze(0), z.unsqueeze(1))  # [M, N]

    def exact_log_marginal(self, x):
        cov = self.W @ self.W.T + self.s2 * torch.eye(len(self.b), dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x.flatten(-3).double())


def test_importance_sampled_nll_matches_the_closed_form_marginal():
    m = LinearGaussian()
    x = (torch.randn(200, 5, dtype=torch.float64) * 1.5).view(200, 1, 1, 5)
    torch.manual_seed(0)
    log_px, elbo = importance_sampling(m, x, 4000, Plan(50, 1000, 1, 1), torch.device("cpu"))
    exact = m.exact_log_marginal(x)
    # tolerance: with S = 4000 the per-point Monte Carlo error of log p^ has sd ~0.007 nats here (measured
    # over seeds), so the max over 200 points reaches 0.02-0.04: every point within 0.05 (7 sd), and
    # the mean error (sd ~0.0005) within 0.003
    np.testing.assert_allclose(log_px.numpy(), exact.numpy(), atol=0.05)
    assert abs((log_px - exact).mean().item()) < 0.003
    assert (elbo < exact + 1e-9).all() and (exact - elbo).mean() > 0.01  # the ELBO is strictly looser


def test_evaluate_runs_on_a_users_own_model():
    m = LinearGaussian()
    x = torch.randn(60, 1, 1, 5)
    r = evaluate(m, x, is_samples=200, bootstrap=20, show_progress=False)
    exact_nll = -m.exact_log_marginal(x).mean().item()
    assert r["nll"] == pytest.approx(exact_nll, abs=0.05)
    assert r["lower_bound"] <= r["nll_ba"] <= r["nll"]


@pytest.mark.parametrize("name", ["vae", "hvae", "pixelhvae"])
@pytest.mark.parametrize("input_type", ["binary", "gray"])
def test_blocked_matrix_equals_brute_force_per_pair_decoder_calls(name, input_type):
    shape = (1, 6, 6)
    m = models.build(name, "standard", shape, input_type).eval()
    x = torch.bernoulli(torch.full((7, *shape), 0.3)) if input_type == "binary" else \
        (torch.randint(0, 256, (7, *shape)) + 0.5) / 256
    z = torch.randn(5, m.latent_dim)
    with torch.no_grad():
        brute = torch.tensor([[m.log_likelihood(x[j : j + 1], z[i].view(1, 1, -1)).item() for j in range(7)]
                              for i in range(5)])
        for rows, cols in [(5, 7), (2, 3), (1, 1)]:
            L = likelihood_matrix(m, x, z, Plan(1, 1, rows, cols), torch.device("cpu"))
            np.testing.assert_allclose(L.numpy(), brute.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("budget", [10_000, 123_457, 10**7, 4 * 2**30])
@pytest.mark.parametrize("per_item", [7, 1000, 30_000])
def test_chunk_plan_never_exceeds_its_budget(budget, per_item):
    for n_points, n_samples in [(1, 1), (10, 5000), (10000, 5000), (3, 7)]:
        if per_item > budget:
            with pytest.raises(GlossyError, match="memory budget"):
                plan_chunks(n_points, n_samples, per_item, budget)
            continue
        p, s = plan_chunks(n_points, n_samples, per_item, budget)
        assert 1 <= p <= n_points and 1 <= s <= n_samples
        assert p * s * per_item <= budget


def test_make_plan_respects_the_budget_for_every_model():
    for name in ("vae", "hvae", "pixelhvae"):
        m = models.build(name, "standard", (1, 28, 28), "binary")
        plan = make_plan(m, 10000, 10000, 5000, 2**28)
        assert plan.points * plan.samples * m.eval_bytes_per_sample() <= 2**28


def test_fixed_seed_makes_evaluation_repeatable_and_the_rng_is_left_alone():
    m = models.build("vae", "vamp", (1, 6, 6), "binary", n_components=5)
    x = torch.bernoulli(torch.full((20, 1, 6, 6), 0.3))
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a = evaluate(m, x, is_samples=30, bootstrap=10, show_progress=False)
    assert torch.equal(before, torch.random.get_rng_state())
    b = evaluate(m, x, is_samples=30, bootstrap=10, show_progress=False)
    for k in ("nll", "glossy_max", "glossy_std", "nll_ba", "glossy_max_ci"):
        assert a[k] == b[k]


def test_the_glossy_matrix_over_budget_is_refused_clearly():
    m = models.build("vae", "standard", (1, 6, 6), "binary")
    with pytest.raises(GlossyError, match="glossy matrix needs"):
        evaluate(m, torch.zeros(300, 1, 6, 6), is_samples=2, memory_budget_gb=1e-4, show_progress=False)


def test_log_progress_writes_one_line_per_tenth_and_stays_quiet_for_short_work(caplog):
    import logging

    from glossy_cli.evaluate import LogProgress

    with caplog.at_level(logging.INFO, logger="glossy"):
        with LogProgress(100, "importance sampling", "points", quiet_s=0.0) as p:
            for _ in range(15):
                p.update(7)  # 105 > 100: the last update overshoots, as a last partial group can
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 9, lines  # 10% ... 90%; none at completion
    assert lines[0].startswith("importance sampling: 14/100 points (14%), 0m00s elapsed, about ")
    assert [int(m.split("(")[1].split("%")[0]) // 10 for m in lines] == list(range(1, 10))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glossy"):
        with LogProgress(100, "glossy matrix", "candidates", quiet_s=60.0) as p:
            for _ in range(100):
                p.update(1)
    assert caplog.records == []
