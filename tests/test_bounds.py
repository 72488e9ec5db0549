"""The bounds maths against brute force, closed forms and Theorem 2 on small finite problems."""

import math

import numpy as np
import pytest
import torch

from glossy import bounds, intervals, storage, working_set


def brute_log_c(L, log_px):
    L, lp = np.asarray(L, dtype=np.float64), np.asarray(log_px, dtype=np.float64)
    m, n = L.shape
    out = np.empty(m)
    for i in range(m):
        a = L[i] - lp
        mx = a.max()
        out[i] = mx + math.log(sum(math.exp(v - mx) for v in a)) - math.log(n)
    return out


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (50.0, -1e4), (300.0, -3e4)])
def test_log_c_matches_brute_force_at_extreme_magnitudes(scale, offset):
    g = torch.Generator().manual_seed(1)
    L = torch.randn(7, 11, generator=g, dtype=torch.float64) * scale + offset
    lpx = torch.randn(11, generator=g, dtype=torch.float64) * scale + offset
    want = brute_log_c(L, lpx)
    for block in (1, 3, None):
        got = bounds.log_c(L, lpx, block_rows=block).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * max(1.0, scale))
    assert np.isfinite(bounds.log_c(L.float(), lpx.float()).numpy()).all()


def test_glossy_stats_and_lower_bound():
    v = torch.tensor([0.5, -2.0, 3.0, 1.0], dtype=torch.float64)
    s = bounds.glossy_stats(v)
    assert s["glossy_max"] == 3.0 and s["argmax"] == 2
    assert s["glossy_std"] == pytest.approx(np.std(v.numpy(), ddof=1))
    assert bounds.lower_bound(10.0, v) == 7.0
    assert bounds.lower_bound(10.0, v - 5) == 10.0  # the prior itself is a candidate with log c = 0


def _random_problem(seed, m=6, n=40, d=8):
    """A finite latent model: atoms = Bernoulli images, data drawn from a random mixture of them."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(m, d, generator=g).clamp(0.05, 0.95)
    k = torch.randint(m, (n,), generator=g)
    x = torch.bernoulli(p[k], generator=g)
    L = (x @ torch.log(p).T + (1 - x) @ torch.log1p(-p).T).T.double()  # [m, n]
    return L, g


def brute_min_nll(L, iters=20000):
    """min over priors by plain exponentiated-gradient descent on the simplex (independent of BA)."""
    m = L.shape[0]
    theta = torch.zeros(m, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(iters // 10):
        opt.zero_grad()
        f = -torch.logsumexp(L + torch.log_softmax(theta, 0)[:, None], 0).mean()
        f.backward()
        opt.step()
    return f.item()


@pytest.mark.parametrize("seed", [0, 1, *(pytest.param(k, marks=pytest.mark.slow) for k in range(2, 5))])
def test_theorem2_bound_never_exceeds_min_over_priors_and_meets_it_at_the_optimum(seed):
    L, g = _random_problem(seed)
    ba = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-10)
    assert ba.converged
    best = ba.nll
    assert best == pytest.approx(brute_min_nll(L), abs=1e-3)
    for _ in range(20):  # random positive tau
        log_tau = torch.randn(L.shape[1], generator=g, dtype=torch.float64) * 5 - 5
        lb = bounds.lower_bound(bounds.nll(log_tau), bounds.log_c(L, log_tau))
        assert lb <= best + 1e-9
    # at the optimum tau = p_w*, sup log c = 0 and the bound equals the minimum
    lpw = bounds.mixture_log_marginal(L, ba.log_w)
    lb_opt = bounds.lower_bound(bounds.nll(lpw), bounds.log_c(L, lpw))
    assert lb_opt == pytest.approx(best, abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_blahut_arimoto_is_monotone_and_sandwiches_the_optimum(seed):
    L, _ = _random_problem(seed, m=10, n=60)
    ba = bounds.blahut_arimoto(L, max_iter=300, tol=0, speedups=bounds.Speedups(squarem=False))  # plain steps
    nlls = [h[0] for h in ba.history]
    assert all(b <= a + 1e-12 for a, b in zip(nlls, nlls[1:]))
    opt = bounds.blahut_arimoto(L, max_iter=50000, tol=1e-11).nll
    for nll_w, lower in ba.history:
        assert lower <= opt + 1e-9 <= nll_w + 2e-9


def test_blahut_arimoto_finds_the_known_optimum():
    # each datum is explained by exactly one atom (others 1000 nats worse): the optimal prior is the
    # empirical frequency of the atoms, and min NLL = -mean log(freq) - mean L[k_j, j]
    counts = torch.tensor([5, 1, 3, 0, 11])
    n = int(counts.sum())
    k = torch.repeat_interleave(torch.arange(5), counts)
    L = torch.full((5, n), -1000.0, dtype=torch.float64)
    L[k, torch.arange(n)] = -3.0
    ba = bounds.blahut_arimoto(L, max_iter=5000, tol=1e-10)
    freq = counts.double() / n
    np.testing.assert_allclose(ba.log_w.exp().numpy(), freq.numpy(), atol=1e-6)
    want = -(torch.log(freq[k]).mean().item()) + 3.0
    assert ba.nll == pytest.approx(want, abs=1e-6)


def test_ba_matrix_path_equals_log_path_at_large_magnitudes():
    g = torch.Generator().manual_seed(3)
    L = torch.randn(50, 70, generator=g, dtype=torch.float64) * 40 - 1e4
    a = bounds.blahut_arimoto(L, max_iter=50, tol=0, speedups=bounds.PLAIN)
    b = bounds.blahut_arimoto(L, max_iter=50, tol=0, max_bytes=0, speedups=bounds.PLAIN)
    assert a.nll == pytest.approx(b.nll, abs=1e-8)
    np.testing.assert_allclose(a.log_w.numpy(), b.log_w.numpy(), atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_sandwich_order_on_random_problems(seed):
    g = torch.Generator().manual_seed(seed)
    n = 50
    L = torch.randn(n, n, generator=g, dtype=torch.float64) * 10 - 100
    log_px = torch.logsumexp(L, 0) - math.log(n) + torch.randn(n, generator=g, dtype=torch.float64)
    nll = bounds.nll(log_px)
    lb = bounds.lower_bound(nll, bounds.log_c(L, log_px))
    s = bounds.sandwich(L, log_px, max_iter=3000, tol=1e-7)
    aug = torch.cat([L, log_px[None]], 0)
    best = bounds.blahut_arimoto(aug, max_iter=50000, tol=1e-10).nll
    assert lb <= best + 1e-8
    assert best <= s["nll_ba"] + 1e-9
    assert s["nll_ba"] <= nll + 1e-12
    assert s["ba_best_prior_lower"] <= best + 1e-9


def test_bootstrap_matches_explicit_resampling():
    g = torch.Generator().manual_seed(0)
    n = 30
    L = torch.randn(n, n, generator=g, dtype=torch.float64) * 20 - 500
    lpx = torch.randn(n, generator=g, dtype=torch.float64) * 3 - 480
    ci = intervals.bootstrap(L, lpx, n_boot=200, seed=7, level=0.9)
    gen = torch.Generator().manual_seed(7)
    idx = torch.randint(n, (200, n), generator=gen)
    maxes, stds = [], []
    for b in range(200):
        sel = idx[b]
        lc = bounds.log_c(L[sel][:, sel], lpx[sel])
        maxes.append(lc.max().item())
        stds.append(lc.std().item())
    q = [0.05, 0.95]
    np.testing.assert_allclose(ci["glossy_max"], np.quantile(maxes, q), atol=1e-8)
    np.testing.assert_allclose(ci["glossy_std"], np.quantile(stds, q), atol=1e-8)


@pytest.mark.slow  # the bootstrap is the coverage study's comparison now, not what glossy reports
def test_bootstrap_intervals_cover_at_roughly_the_nominal_rate():
    # data x ~ N(mu, 1), candidates at the data, Gaussian likelihood l(x|z) = N(x; z, 1) and tau = the
    # true marginal N(mu, 2). Population log c(z) = log E_x[l(x|z)/tau(x)] in closed form; its std over
    # candidates z ~ N(mu, 1) is the estimand (smooth, so the percentile bootstrap should cover it).
    rng = np.random.default_rng(0)
    n, reps, hits = 120, 150, 0
    # closed form: E_x N(x; z, 1) / N(x; 0, 2) with x ~ N(0, 1) -> population log c(z) is a quadratic
    # in z; its std over z ~ N(0, 1) is computed by Monte Carlo once with 10^6 draws
    zz = rng.standard_normal(400_000)
    xs = rng.standard_normal(4000)

    def pop_log_c(z):
        a = -0.5 * (xs[None] - z[:, None]) ** 2 + 0.25 * xs[None] ** 2 + 0.5 * math.log(2)
        return np.log(np.mean(np.exp(a), 1))

    true_std = np.std(np.concatenate([pop_log_c(c) for c in np.array_split(zz[:40000], 40)]), ddof=1)
    for _ in range(reps):
        x = torch.tensor(rng.standard_normal(n))
        L = -0.5 * (x[None] - x[:, None]) ** 2 - 0.5 * math.log(2 * math.pi)
        lpx = -0.25 * x**2 - 0.5 * math.log(4 * math.pi)
        lo, hi = intervals.bootstrap(L, lpx, n_boot=200, seed=int(rng.integers(1 << 30)), level=0.9)["glossy_std"]
        hits += lo <= true_std <= hi
    rate = hits / reps
    assert 0.7 <= rate <= 0.99, rate


def test_unpaired_bootstrap_matches_explicit_resampling_of_the_columns():
    # candidates from elsewhere (M != N): a resample draws data points only; every candidate stays
    g = torch.Generator().manual_seed(1)
    m, n = 13, 25
    L = torch.randn(m, n, generator=g, dtype=torch.float64) * 15 - 300
    lpx = torch.randn(n, generator=g, dtype=torch.float64) * 3 - 290
    ci = intervals.bootstrap(L, lpx, n_boot=150, seed=3, level=0.8, paired=False, block_rows=4)
    idx = torch.randint(n, (150, n), generator=torch.Generator().manual_seed(3))
    maxes, stds, lbs = [], [], []
    for b in range(150):
        sel = idx[b]
        lc = bounds.log_c(L[:, sel], lpx[sel])
        maxes.append(lc.max().item())
        stds.append(lc.std().item())
        lbs.append(bounds.lower_bound(bounds.nll(lpx[sel]), lc))
    q = [0.1, 0.9]
    np.testing.assert_allclose(ci["glossy_max"], np.quantile(maxes, q), atol=1e-8)
    np.testing.assert_allclose(ci["glossy_std"], np.quantile(stds, q), atol=1e-8)
    np.testing.assert_allclose(ci["lower_bound"], np.quantile(lbs, q), atol=1e-8)
    with pytest.raises(ValueError, match="square"):
        intervals.bootstrap(L, lpx, 5)


def _two_samples(seed, m=5, n_fit=60, n_score=45, d=10):
    """Atoms = Bernoulli images; a fit sample and a score sample from the same mixture, and the model's
    marginal tau of each as a noisy version of a uniform mixture (its own prior atom)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(m, d, generator=g).clamp(0.05, 0.95)
    mix = torch.softmax(torch.randn(m, generator=g) * 2, 0)

    def sample(n):
        k = torch.multinomial(mix, n, replacement=True, generator=g)
        x = torch.bernoulli(p[k], generator=g)
        L = (x @ torch.log(p).T + (1 - x) @ torch.log1p(-p).T).T.double()  # [m, n]
        tau = torch.logsumexp(L, 0) - math.log(m) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
        return L, tau

    return sample(n_fit), sample(n_score)


@pytest.mark.parametrize("seed", [0, *(pytest.param(k, marks=pytest.mark.slow) for k in range(1, 3))])
def test_heldout_sandwich_against_a_brute_force_prior_fitted_on_one_sample_and_scored_on_another(seed):
    (Lf, tf), (Ls, ts) = _two_samples(seed)
    ho = bounds.prior_fit(Lf, tf, max_iter=20000, tol=1e-10)
    assert ho["converged"]
    # brute force: the best prior on (atoms + model prior) for the fit sample, by gradient descent on the
    # simplex (independent of BA), then its NLL on the score sample written out term by term
    aug_f = torch.cat([Lf, tf[None]])
    theta = torch.zeros(aug_f.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(4000):
        opt.zero_grad()
        f = -torch.logsumexp(aug_f + torch.log_softmax(theta, 0)[:, None], 0).mean()
        f.backward()
        opt.step()
    w = torch.softmax(theta.detach(), 0)
    assert ho["fit_nll"] == pytest.approx(f.item(), abs=1e-4)
    brute = -np.mean([math.log(sum(w[i].item() * math.exp(Ls[i, j].item()) for i in range(Ls.shape[0]))
                               + w[-1].item() * math.exp(ts[j].item())) for j in range(Ls.shape[1])])
    mix = bounds.mixture_log_marginal(Ls, ho["log_w"][:-1])
    got = bounds.heldout_nll(ho["log_w"], ts, mix)
    assert got == pytest.approx(brute, abs=2e-3)
    assert ho["prior_weight"] == pytest.approx(w[-1].item(), abs=2e-3)


def test_heldout_sandwich_is_reported_as_it_comes_out_even_above_the_models_nll():
    # the fit sample is explained by atom 0 far better than by the model's prior; the score sample is
    # not (atom 0 gives it 50 nats less than the prior): the held-out NLL ends above the model's
    L_fit = torch.tensor([[-5.0, -5.0, -5.0], [-40.0, -40.0, -40.0]], dtype=torch.float64)
    tau_fit = torch.full((3,), -20.0, dtype=torch.float64)
    L_score = torch.tensor([[-70.0, -70.0], [-80.0, -80.0]], dtype=torch.float64)
    tau_score = torch.full((2,), -20.0, dtype=torch.float64)
    ho = bounds.prior_fit(L_fit, tau_fit, max_iter=5000, tol=1e-12)
    got = bounds.heldout_nll(ho["log_w"], tau_score, bounds.mixture_log_marginal(L_score, ho["log_w"][:-1]))
    w = ho["log_w"].exp()
    want = -math.log(w[0] * math.exp(-70) + w[1] * math.exp(-80) + w[2] * math.exp(-20))
    assert got == pytest.approx(want, rel=1e-12)
    assert got > bounds.nll(tau_score) + 5  # worse than the model's own prior, and reported so


def test_ba_float32_matrix_path_agrees_with_float64_and_the_log_domain():
    L, _ = _random_problem(4, m=30, n=80)
    m, n = L.shape
    a = bounds.blahut_arimoto(L, max_iter=200, tol=0)  # float64 matrix
    b = bounds.blahut_arimoto(L, max_iter=200, tol=0, max_bytes=4 * m * n)  # float32 matrix
    c = bounds.blahut_arimoto(L, max_iter=200, tol=0, max_bytes=0)  # exact log domain
    assert a.nll == pytest.approx(c.nll, abs=1e-9)
    assert b.nll == pytest.approx(c.nll, abs=1e-4)
    np.testing.assert_allclose(b.log_w.exp().numpy(), c.log_w.exp().numpy(), atol=1e-4)


def test_popoviciu_flags_a_row_that_violates_it_and_passes_one_that_does_not():
    n = 10000  # static MNIST's test set: log N = 9.21
    bad = bounds.popoviciu(15.7, 34.3, n)  # the paper's MNIST VAE row
    assert bad["violates"] and bad["popoviciu_bound"] == pytest.approx((15.7 + math.log(n)) / 2, rel=1e-4)
    assert not bounds.popoviciu(42.8, 6.8, n)["violates"]  # our in-sample MNIST VAE row
    # the bound is sharp: N in-sample values, half at -log N and half at the max, reach it
    v = torch.tensor([-math.log(n)] * (n // 2) + [3.0] * (n // 2), dtype=torch.float64)
    sd = v.std().item()
    assert sd == pytest.approx(bounds.popoviciu(3.0, sd, n)["popoviciu_bound"], rel=1e-9)
    assert not bounds.popoviciu(3.0, sd * 0.999, n)["violates"]


def _sparse_problem(seed: int, m: int = 400, n: int = 30) -> torch.Tensor:
    """Many atoms, few data points: the optimal prior sits on a few atoms and most weights vanish."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64) * 30 - 200


def _certified_gap(L: torch.Tensor, log_w: torch.Tensor) -> float:
    """max_i log c_w(z_i) over every atom, from scratch in the log domain."""
    return max(bounds.log_c(L, bounds.mixture_log_marginal(L, log_w)).max().item(), 0.0)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("storage_bytes", [None, "float32"])
def test_active_set_reaches_the_same_fit_with_the_gap_certified_over_every_atom(seed, storage_bytes):
    L = _sparse_problem(seed)
    mb = 2 * 2**30 if storage_bytes is None else 4 * L.numel()
    off = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, max_bytes=mb,
                                speedups=bounds.Speedups(active_set=False))
    on = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, max_bytes=mb)
    assert off.converged and on.converged
    assert (~torch.isfinite(on.log_w)).sum().item() > L.shape[0] // 2  # most atoms really left the products
    assert on.nll == pytest.approx(off.nll, abs=2e-7)
    assert on.gap < 1e-7
    assert _certified_gap(L, on.log_w) == pytest.approx(on.gap, abs=1e-5 if storage_bytes else 1e-10)


def test_active_set_brings_back_atoms_left_out_too_early(monkeypatch):
    # a threshold far too eager leaves out atoms the optimum needs: the certificate over the left-out atoms
    # must find them, bring them back and go on to the same optimum
    L = _sparse_problem(7)
    off = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, speedups=bounds.Speedups(active_set=False))
    calls = []
    real = storage.exp_log_c
    monkeypatch.setattr(bounds, "exp_log_c", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(bounds, "PRUNE_LOG_WEIGHT", -3.5)
    on = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, speedups=bounds.Speedups(squarem=False))
    assert len(calls) >= 2  # at least one round of atoms brought back before the certificate held
    assert on.converged and on.nll == pytest.approx(off.nll, abs=2e-7)
    assert _certified_gap(L, on.log_w) == pytest.approx(on.gap, abs=1e-10) and on.gap < 1e-7


def test_active_set_stopped_by_max_iter_still_reports_the_gap_over_every_atom(monkeypatch):
    L = _sparse_problem(8)
    monkeypatch.setattr(bounds, "PRUNE_LOG_WEIGHT", -4.0)
    r = bounds.blahut_arimoto(L, max_iter=12, tol=0)
    assert not r.converged and r.iterations == 12
    assert r.gap == pytest.approx(_certified_gap(L, r.log_w), abs=1e-10)


def test_prior_fit_never_leaves_out_the_prior():
    L = _sparse_problem(9, m=200)
    log_px = L.max(0).values - 200.0  # a prior far worse than the best atoms: its weight vanishes
    fit = bounds.prior_fit(L, log_px, max_iter=2000, tol=1e-9, speedups=bounds.Speedups(working_set=False))
    assert -math.inf < fit["log_w"][-1].item() < bounds.PRUNE_LOG_WEIGHT
    # the working set keeps it in S, at the optimum's weight: exactly 0 here, its log c certified below 0
    ws = bounds.prior_fit(L, log_px, max_iter=2000, tol=1e-9)
    assert ws["converged"] and ws["prior_weight"] == 0.0
    aug = torch.cat([L, log_px[None]])
    assert bounds.log_c(aug, bounds.mixture_log_marginal(aug, ws["log_w"]))[-1].item() < -100


def test_blocked_logsumexp_matches_torch_with_infinities_and_far_tails():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 50, generator=g, dtype=torch.float64) * 400  # terms thousands of nats apart
    a[1] = -math.inf  # an all -inf line
    a[2, :10] = -math.inf
    a[3, 5] = math.inf
    a[4, 7] = math.nan
    for dim in (0, 1):
        want = torch.logsumexp(a, dim)
        got = bounds._logsumexp_(a.clone(), dim)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-15, atol=0)  # NaN and inf where torch has them


def test_resampled_log_c_is_exact_where_a_resample_leaves_out_the_only_large_term():
    # row 0's only sizeable term is point 0, 1000 nats above the rest: resamples without point 0 underflow
    # the product (e^-1000) and must take the exact log-domain path
    n, b = 6, 40
    L = torch.full((2, n), -1500.0, dtype=torch.float64)
    L[0, 0] = -500.0
    L[1] = torch.linspace(-600.0, -590.0, n, dtype=torch.float64)
    lpx = torch.zeros(n, dtype=torch.float64)
    counts = intervals.bootstrap_counts(n, b, seed=1)
    assert (counts[:, 0] == 0).any() and (counts[:, 0] > 0).any()
    got = intervals.resampled_log_c(L, lpx, counts)
    want = torch.stack([torch.logsumexp(L - lpx + torch.log(counts[k]), 1) for k in range(b)], 1) - math.log(n)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


def test_log_c_and_its_replicates_from_one_exp_matrix_are_the_two_functions_numbers():
    """log c bit for bit (the same shift, floor and row blocks as bounds.log_c), the replicates to float64
    rounding (their matrix product runs on other row blocks), a resample that leaves out a row's only sizeable
    term exact, and a row that is -inf everywhere -inf in both (resampled_log_c alone gives NaN there)."""
    g = torch.Generator().manual_seed(0)
    n = 300
    L = (torch.randn(700, n, generator=g) * 30 - 200).float()
    L[5] = -math.inf
    L[6] = -1500.0
    L[6, 0] = -150.0  # resamples without point 0 take the exact path
    lpx = torch.randn(n, generator=g, dtype=torch.float64) * 5 - 150
    counts = intervals.group_weights(n, 20, seed=1)
    lc, lcb = intervals.log_c_and_replicates(L, lpx, counts, block_rows=64)
    assert lc.equal(bounds.log_c(L, lpx, block_rows=64))
    apart = intervals.resampled_log_c(L, lpx, counts)
    keep = torch.ones(len(L), dtype=torch.bool)
    keep[5] = False
    np.testing.assert_allclose(lcb[keep].numpy(), apart[keep].numpy(), rtol=1e-14, atol=1e-12)
    assert torch.isnan(apart[5]).all() and (lcb[5] == -math.inf).all() and lc[5] == -math.inf
    want6 = torch.stack([torch.logsumexp(L[6].double() - lpx + torch.log(counts[k]), 0) - math.log(counts[k].sum())
                         for k in range(20)])
    np.testing.assert_allclose(lcb[6].numpy(), want6.numpy(), rtol=1e-12)


def test_active_set_moves_to_the_matrix_products_once_the_atoms_in_play_fit_the_budget(monkeypatch):
    # the budget holds 100 of the 400 rows in float64 (200 in float32): the first steps recompute the rows in
    # float32 blocks, then the surviving atoms' exp-matrix is built and the products take over, with the same
    # certified answer
    L = _sparse_problem(3)
    full = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, speedups=bounds.Speedups(active_set=False))
    sizes = []
    real = storage.ba_step_exp
    monkeypatch.setattr(bounds, "ba_step_exp", lambda E, *a: sizes.append(E.shape[0]) or real(E, *a))
    tight = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, max_bytes=8 * 100 * L.shape[1])
    assert sizes and max(sizes) <= 200 and tight.iterations + 1 - len(sizes) >= 1  # some streamed steps first
    assert tight.converged and tight.nll == pytest.approx(full.nll, abs=2e-7)
    assert _certified_gap(L, tight.log_w) == pytest.approx(tight.gap, abs=1e-5)  # float32 rows: ~5e-6 relative


# ------------------------------------------------------------------------------- the jackknife intervals

def test_group_weights_leave_every_point_out_exactly_once_in_groups_of_near_equal_size():
    w = intervals.group_weights(23, 5, seed=3)
    assert w.shape == (5, 23)
    assert torch.equal((1 - w).sum(0), torch.ones(23, dtype=torch.float64))  # each point out of one replicate
    left_out = (1 - w).sum(1)
    assert left_out.max() - left_out.min() <= 1 and left_out.sum() == 23
    assert not torch.equal(w, intervals.group_weights(23, 5, seed=4))
    with pytest.raises(ValueError, match="groups"):
        intervals.group_weights(4, 5)


@pytest.mark.parametrize("paired", [True, False])
def test_jackknife_replicates_equal_the_statistics_recomputed_without_each_group(paired):
    g = torch.Generator().manual_seed(5)
    n = 17
    m = n if paired else 9
    L = torch.randn(m, n, generator=g, dtype=torch.float64) * 25 - 400
    lpx = torch.randn(n, generator=g, dtype=torch.float64) * 3 - 390
    w = intervals.group_weights(n, 4, seed=1)
    reps = intervals.replicates(L, lpx, w, paired=paired, block_rows=3)
    for r in range(4):
        keep = w[r].bool()
        lc = bounds.log_c(L[keep][:, keep] if paired else L[:, keep], lpx[keep])
        nll = bounds.nll(lpx[keep])
        np.testing.assert_allclose(reps["glossy_max"][r].item(), lc.max().item(), rtol=1e-12)
        np.testing.assert_allclose(reps["glossy_std"][r].item(), lc.std().item(), rtol=1e-10)
        np.testing.assert_allclose(reps["nll"][r].item(), nll, rtol=1e-12)
        np.testing.assert_allclose(reps["lower_bound"][r].item(), bounds.lower_bound(nll, lc), rtol=1e-12)


def test_delete_one_jackknife_of_the_nll_is_the_classical_standard_error():
    lpx = torch.randn(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4 - 100
    reps = intervals.resampled_nll(intervals.group_weights(40, 40), lpx)
    assert intervals.jackknife_se(reps) == pytest.approx(lpx.std().item() / math.sqrt(40), rel=1e-10)
    lo, hi = intervals.normal_interval(-lpx, 0.95)
    assert (hi - lo) / 2 == pytest.approx(1.959963985 * lpx.std().item() / math.sqrt(40), rel=1e-9)


def test_t_quantiles_match_the_tables():
    for p, df, want in [(0.975, 1, 12.7062047), (0.975, 19, 2.0930241), (0.95, 9, 1.8331129), (0.995, 4, 4.6040949)]:
        assert intervals.t_quantile(p, df) == pytest.approx(want, abs=2e-6)


def test_jackknife_intervals_cover_the_expected_glossy_std_at_n():
    # data x ~ N(0, 1), candidates at the data, l(x|z) = N(x; z, 1), tau = the true marginal N(0, 2). The
    # target is E[glossy_std] at this N over data sets, estimated by its mean over the replications; the
    # jackknife interval (centred at the estimate) should cover it at about the nominal 90%
    rng = np.random.default_rng(0)
    n, reps, level = 120, 300, 0.9
    est, ivs = [], []
    for k in range(reps):
        x = torch.tensor(rng.standard_normal(n))
        L = -0.5 * (x[None] - x[:, None]) ** 2 - 0.5 * math.log(2 * math.pi)
        lpx = -0.25 * x**2 - 0.5 * math.log(4 * math.pi)
        ci = intervals.jackknife(L, lpx, groups=20, seed=k, level=level)
        est.append(bounds.log_c(L, lpx).std().item())
        ivs.append(ci["glossy_std"])
    target = float(np.mean(est))
    rate = np.mean([lo <= target <= hi for lo, hi in ivs])
    assert all(lo <= e <= hi for e, (lo, hi) in zip(est, ivs))
    assert 0.84 <= rate <= 0.96, rate  # 300 replications: the rate's sd is 0.017


@pytest.mark.parametrize("seed", range(2))
def test_a_matrix_that_does_not_fit_is_streamed_to_the_same_certified_optimum(seed, monkeypatch):
    """No room for the exp-matrix (a budget of 3 rows): every step recomputes exp(L - column max) in float32
    row blocks, without the active set and with it (atoms left out too early, brought back out of order), and
    reaches the optimum of the float64 matrix and of the exact log domain, its gap certified over every atom."""
    L = _sparse_problem(seed, m=300, n=40)
    plain_steps = bounds.Speedups(active_set=False)
    exact = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, max_bytes=0, speedups=plain_steps)  # log domain
    full = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, speedups=plain_steps)  # float64 matrix
    assert full.nll == pytest.approx(exact.nll, abs=1e-9)
    logs = []
    real = bounds._ba_step_log
    monkeypatch.setattr(bounds, "_ba_step_log", lambda *a: logs.append(1) or real(*a))
    for active_set in (False, True):
        streamed = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-7, max_bytes=3 * 4 * L.shape[1],
                                         speedups=bounds.Speedups(active_set=active_set))
        assert streamed.converged and streamed.nll == pytest.approx(exact.nll, abs=1e-5)
        assert _certified_gap(L, streamed.log_w) == pytest.approx(streamed.gap, abs=1e-5) and streamed.gap < 1e-7
    assert logs == []  # every step streamed
    # far too eager: atoms come back, out of order (a column whose mixture the atoms in play cannot carry in
    # float32 takes its exact log-domain step); a tolerance float32's rows resolve (the default is 1e-4)
    monkeypatch.setattr(bounds, "PRUNE_LOG_WEIGHT", -3.5)
    eager = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-5, max_bytes=3 * 4 * L.shape[1])
    assert eager.converged and eager.nll == pytest.approx(exact.nll, abs=1e-5)
    assert _certified_gap(L, eager.log_w) == pytest.approx(eager.gap, abs=1e-5)
    assert storage.ba_storage(300, 40, 3 * 4 * 40) == storage.STREAMED
    assert storage.ba_storage(300, 40, 4 * 40 - 1) == storage.LOG_DOMAIN


@pytest.mark.slow  # up to 8 s a seed; SQUAREM is an option of the fallback (bounds.ACCELERATED), off by default
@pytest.mark.parametrize("seed", range(4))
def test_squarem_reaches_the_plain_iterations_optimum_in_fewer_steps_with_every_step_certified(seed):
    """The extrapolated iteration converges to the optimum the plain one reaches (and brute force finds), to the
    same tolerance, in fewer steps; every accepted point descends, and every step's sandwich holds."""
    L, _ = _random_problem(seed, m=12, n=60)
    plain = bounds.blahut_arimoto(L, max_iter=50000, tol=1e-8, speedups=bounds.PLAIN)
    fast = bounds.blahut_arimoto(L, max_iter=50000, tol=1e-8, speedups=bounds.Speedups(active_set=False, squarem=True))
    assert plain.converged and fast.converged and fast.gap < 1e-8
    assert fast.nll == pytest.approx(plain.nll, abs=1e-8) and fast.nll == pytest.approx(brute_min_nll(L), abs=1e-3)
    assert fast.iterations < plain.iterations / 2, (fast.iterations, plain.iterations)
    for nll_w, lower in fast.history:
        assert lower <= plain.nll + 1e-8 <= nll_w + 2e-8
    L2 = _sparse_problem(seed)  # with the active set, streamed or not
    for mb in (2 * 2**30, 3 * 4 * L2.shape[1]):
        ref = bounds.blahut_arimoto(L2, max_iter=50000, tol=1e-6, max_bytes=mb, speedups=bounds.PLAIN)
        got = bounds.blahut_arimoto(L2, max_iter=50000, tol=1e-6, max_bytes=mb, speedups=bounds.ACCELERATED)
        assert got.converged and got.nll == pytest.approx(ref.nll, abs=2e-6)
        assert _certified_gap(L2, got.log_w) == pytest.approx(got.gap, abs=1e-5) and got.gap < 1e-6


def test_bound_checks_name_each_bound_above_an_nll_glossy_exhibits(caplog):
    from glossy.evaluation import bound_checks

    r = {"nll": 80.0, "nll_ba": 70.0, "nll_ba_heldout": 78.0, "lower_bound": 60.0, "lower_bound_searched": 75.0,
         "lower_bound_searched_ci": [74.0, 76.0]}
    with caplog.at_level("WARNING", logger="glossy"):
        found = bound_checks(r)
    assert found == ["lower_bound_searched = 75.000 exceeds nll_ba = 70.000, an NLL glossy exhibits for the same "
                     "images: it is not a bound on every prior"]
    assert found[0] in caplog.text
    assert bound_checks({**r, "lower_bound_searched": 69.0}) == []
    # lower_bound_test is lower_bound under its source's name: one number, named once
    assert bound_checks({"nll_ba": 70.0, "lower_bound": 75.0, "lower_bound_test": 75.0}) == [
        "lower_bound = 75.000 exceeds nll_ba = 70.000, an NLL glossy exhibits for the same images: it is not a bound "
        "on every prior"]


# --- the working set (glossy.working_set): Blahut-Arimoto's optimum by sequential quadratic steps ---------------

def _bigger_problem(seed: int, m: int = 3000, n: int = 1500, d: int = 8) -> torch.Tensor:
    """Gaussian likelihoods of n points under m atoms in d dimensions (float32, m n > 2^22: the pricing pass in
    float32, as on a real held-out fit): the optimum puts weight on tens of atoms."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, d, generator=g)
    x = torch.randn(n, d, generator=g) * 1.2
    return (-0.5 * torch.cdist(z, x) ** 2).float()


@pytest.mark.parametrize("seed", range(3))
def test_working_set_reaches_the_plain_iterations_optimum_with_its_certificate_over_every_atom(seed):
    """Small problems (float64 throughout): the same optimum as Blahut-Arimoto run to 1e-10 and as brute force,
    the returned gap equal to the gap recomputed from scratch over every atom, and every pricing pass's sandwich
    around the optimum."""
    L, _ = _random_problem(seed, m=12, n=60)
    plain = bounds.blahut_arimoto(L, max_iter=100000, tol=1e-9, speedups=bounds.Speedups(squarem=True))
    ws = bounds.best_prior(L, max_iter=500, tol=1e-10)
    assert plain.converged and ws.converged and ws.iterations < 100
    assert ws.nll == pytest.approx(plain.nll, abs=1e-9) and ws.nll == pytest.approx(brute_min_nll(L), abs=1e-3)
    assert _certified_gap(L, ws.log_w) == pytest.approx(ws.gap, abs=1e-12)
    for nll_w, lower in ws.history:
        assert lower <= plain.nll + 1e-9 <= nll_w + 2e-9
    L2 = _sparse_problem(seed)  # 400 atoms on 30 points: the optimum on a few of them
    ref = bounds.blahut_arimoto(L2, max_iter=100000, tol=1e-9, speedups=bounds.PLAIN)
    got = bounds.best_prior(L2, max_iter=500, tol=1e-9)
    assert got.converged and got.nll == pytest.approx(ref.nll, abs=1e-8)
    assert _certified_gap(L2, got.log_w) == pytest.approx(got.gap, abs=1e-12) and got.gap < 1e-9


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_working_set_on_a_float32_problem_ends_at_the_optimum_whatever_the_budget_and_start(seed):
    """A problem whose pricing pass runs in float32: the optimum (to float32's rounding of the pass) that plain
    Blahut-Arimoto approaches, in a few passes; the same weights, hence the same mixture on other points, from
    another start and under a budget that streams the pass in small blocks (the answer does not depend on the
    path, unlike an iteration stopped at its tolerance)."""
    L = _bigger_problem(seed)
    assert working_set.pricing_dtype(L) == torch.float32
    ws = bounds.best_prior(L, max_iter=500, tol=1e-4)
    assert ws.converged and ws.gap < 1e-5 and len(ws.history) < 20
    assert _certified_gap(L.double(), ws.log_w) == pytest.approx(ws.gap, abs=1e-5)
    plain = bounds.blahut_arimoto(L, max_iter=300, tol=1e-6)
    assert plain.nll - plain.gap <= ws.nll <= plain.nll  # at least as good as any BA iterate: it is the optimum
    g = torch.Generator().manual_seed(seed + 10)
    other = bounds.best_prior(L, torch.randn(L.shape[0], generator=g, dtype=torch.float64), max_iter=500,
                              tol=1e-4, max_bytes=50 * 2**20)
    assert other.converged and other.nll == pytest.approx(ws.nll, abs=1e-9)
    x_other = _bigger_problem(seed + 100)[:, :200]  # the two priors' mixtures on points neither was fitted on
    mix = [bounds.mixture_log_marginal(x_other, r.log_w).mean().item() for r in (ws, other)]
    assert mix[0] == pytest.approx(mix[1], abs=1e-6)


def test_working_set_gives_way_to_blahut_arimoto_where_it_does_not_fit_the_budget():
    """Where the optimum's support outgrows what the budget lets S hold, the working set gives up (None) and
    best_prior is Blahut-Arimoto, step for step; with room for that support, the working set finishes."""
    L = _sparse_problem(3)
    support = int(torch.isfinite(bounds.best_prior(L, max_iter=500, tol=1e-9).log_w).sum())
    small = 6400  # S's matrices get half of it: room for 6 atoms on 30 points
    assert working_set.capacity(L.shape[1], small // 2) == 6 < support
    assert working_set.fit(L, torch.zeros(len(L), dtype=torch.float64), 500, 1e-6, small, None) is None
    roomy = 4 * (16 * L.shape[1] * support + 8 * support**2)  # room for the support, twice over
    assert working_set.fit(L, torch.zeros(len(L), dtype=torch.float64), 500, 1e-6, roomy, None) is not None
    got = bounds.best_prior(L, max_iter=20000, tol=1e-6, max_bytes=small)
    ref = bounds.blahut_arimoto(L, max_iter=20000, tol=1e-6, max_bytes=small)
    assert got.log_w.equal(ref.log_w) and got.iterations == ref.iterations


def test_the_hessians_columns_on_demand_give_the_dense_programs_answer_and_only_the_freed_columns():
    """The restricted solve's H = A A' / n is built a column at a time as the quadratic program frees atoms: the
    same answer as on the whole matrix (to rounding), each computed column equal to the dense one, and on a
    program whose answer is sparse, fewer columns computed than atoms."""
    g = torch.Generator().manual_seed(3)
    for _ in range(10):
        k, n = 40, 200
        A = torch.rand(k, n, generator=g, dtype=torch.float64) ** 4
        dense = A @ A.T / n
        dense.diagonal().mul_(1.0 + working_set.RIDGE).add_(working_set.RIDGE)
        b = -torch.rand(k, generator=g, dtype=torch.float64) + 0.8  # most entries pushed to zero
        y0 = torch.zeros(k, dtype=torch.float64)
        y0[:3] = 0.1
        gram = working_set._Gram(A, n)
        got = working_set._nonneg_qp(gram, b, y0.clone(), 500)
        want = working_set._nonneg_qp(dense, b, y0.clone(), 500)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
        done = torch.nonzero(gram.have).squeeze(1)
        assert 0 < len(done) < k and (got[~gram.have] == 0).all()
        assert torch.allclose(gram.H[:, done], dense[:, done], rtol=1e-12, atol=0)
        assert torch.equal(gram.H[done][:, done], gram.H[done][:, done].T)


def test_nonnegative_quadratic_program_against_brute_force_over_the_active_sets():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        A = torch.randn(6, 9, generator=g, dtype=torch.float64)
        H, b = A @ A.T + 1e-3 * torch.eye(6, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
        got = working_set._nonneg_qp(H, b, torch.rand(6, generator=g, dtype=torch.float64), 200)
        best = math.inf
        for mask in range(1, 64):  # every positive set: the unconstrained optimum there, if feasible
            idx = [i for i in range(6) if mask >> i & 1]
            y = torch.zeros(6, dtype=torch.float64)
            y[idx] = torch.linalg.solve(H[idx][:, idx], -b[idx])
            if (y >= 0).all():
                best = min(best, (0.5 * y @ H @ y + b @ y).item())
        best = min(best, 0.0)  # y = 0
        assert (got >= 0).all() and (0.5 * got @ H @ got + b @ got).item() == pytest.approx(best, abs=1e-10)
