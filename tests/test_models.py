"""The model zoo: reference parameter counts, normalisation, the PixelCNN's masks, the interface."""

import itertools
import math

import numpy as np
import pytest
import torch

from glossy_models import registry as models
from glossy_models.likelihoods import LOGIT_MAX, Bernoulli, DiscretizedLogistic256
from glossy_models.priors import VampPrior, log_normal_diag, log_standard_normal
from tests.helpers import images
from tests.reference import logistic_bin_log_prob_float64, logistic_pairwise_whole_table, vamp_log_prob_componentwise

SHAPE = (1, 28, 28)


# --- parameter counts of the reference architecture, computed by hand from the layer list ---------
def lin(i, o, bias=True):
    return i * o + (o if bias else 0)


def gd(i, o):  # GatedDense: two linear maps
    return 2 * lin(i, o)


def gc(i, o, k):  # GatedConv2d: two convolutions with bias
    return 2 * (i * o * k * k + o)


D, H, Z = 784, 300, 40
VAE_COUNT = (gd(D, H) + gd(H, H) + lin(H, Z) + lin(H, Z)  # q(z|x): 2 gated layers, mean, logvar
             + gd(Z, H) + gd(H, H) + lin(H, D))  # p(x|z): 2 gated layers, Bernoulli mean
HVAE_COUNT = (gd(D, H) + gd(H, H) + 2 * lin(H, Z)  # q(z2|x)
              + gd(D, H) + gd(Z, H) + gd(2 * H, H) + 2 * lin(H, Z)  # q(z1|x,z2)
              + gd(Z, H) + gd(H, H) + 2 * lin(H, Z)  # p(z1|z2)
              + gd(Z, H) + gd(Z, H) + gd(2 * H, H) + lin(H, D))  # p(x|z1,z2)
HS = 6 * 7 * 7  # 294: the encoders' conv output for 28x28
PIXEL_COUNT = (gc(1, 32, 7) + gc(32, 32, 3) + gc(32, 64, 5) + gc(64, 64, 3) + gc(64, 6, 3) + 2 * lin(HS, Z)
               + gc(1, 32, 3) + gc(32, 32, 3) + gc(32, 64, 3) + gc(64, 64, 3) + gc(64, 6, 3)
               + gd(Z, HS) + gd(2 * HS, H) + 2 * lin(H, Z)
               + gd(Z, H) + gd(H, H) + 2 * lin(H, Z)
               + 2 * gd(Z, D)  # projections of z1 and z2 to image size
               + 3 * 64 * 9 + 7 * 64 * 64 * 9  # masked convs without bias (A on 3 channels, then 7 x B)
               + 8 * 2 * 64  # batch norm scale and shift
               + lin(64, 1))  # 1x1 conv to Bernoulli logits
VAMP_COUNT = 500 * D  # pseudo-inputs


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,count", [("vae", VAE_COUNT), ("hvae", HVAE_COUNT), ("pixelhvae", PIXEL_COUNT)])
def test_parameter_counts_match_the_reference(name, count):
    assert count == {"vae": 1_116_864, "hvae": 2_431_024, "pixelhvae": 1_385_821}[name]  # arithmetic check
    assert n_params(models.build(name, "standard", SHAPE, "binary")) == count
    assert n_params(models.build(name, "vamp", SHAPE, "binary")) == count + VAMP_COUNT


def test_gray_heads_add_a_log_scale_layer():
    assert n_params(models.build("vae", "standard", SHAPE, "gray")) == VAE_COUNT + lin(H, D)
    assert n_params(models.build("pixelhvae", "standard", SHAPE, "gray")) == PIXEL_COUNT - lin(64, 1) + 2 * 64


# --- normalisation -------------------------------------------------------------------------------
def test_logistic256_sums_to_one_over_the_bins():
    g = torch.Generator().manual_seed(0)
    mean = torch.cat([torch.rand(20, generator=g), torch.tensor([1 / 512, 1 - 1 / 512, 0.5])])
    log_scale = torch.cat([torch.rand(20, generator=g) * -4.5, torch.tensor([-4.5, 0.0, -2.0])])
    dist = DiscretizedLogistic256(mean[:, None], log_scale[:, None])
    x = ((torch.arange(256) + 0.5) / 256)[None, :, None]  # every bin
    lp = DiscretizedLogistic256(mean[:, None, None], log_scale[:, None, None]).log_prob(x)  # [23, 256]
    total = torch.logsumexp(lp.double(), 1).exp()
    np.testing.assert_allclose(total.numpy(), 1.0, atol=1e-5)
    table = dist.bin_table()[:, 0, :]
    np.testing.assert_allclose(table.numpy(), lp.numpy(), atol=1e-5)


def test_bernoulli_sums_to_one_over_all_binary_images():
    d = 6
    logits = torch.randn(d) * 5
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)))
    total = torch.logsumexp(Bernoulli(logits).log_prob(xs).double(), 0).exp()
    assert total.item() == pytest.approx(1.0, abs=1e-6)


def test_vampprior_integrates_to_one_by_quadrature():
    for dim in (1, 2):
        enc = lambda u, dim=dim: (u.flatten(1)[:, :dim] * 4 - 2, u.flatten(1)[:, dim : 2 * dim] * 2 - 1.5)
        prior = VampPrior(dim, enc, (1, 2, 2), n_components=7, init_mean=0.5, init_std=0.3)
        grid = torch.linspace(-9, 9, 1201, dtype=torch.float64)
        h = (grid[1] - grid[0]).item()
        with torch.no_grad():
            if dim == 1:
                mass = prior.log_prob(grid[:, None].float()).double().exp().sum().item() * h
            else:
                zz = torch.cartesian_prod(grid, grid)
                mass = prior.log_prob(zz.float()).double().exp().sum().item() * h * h
        assert mass == pytest.approx(1.0, abs=2e-3)


def test_vampprior_one_product_form_equals_the_componentwise_density_and_trains_its_pseudo_inputs():
    m = models.build("hvae", "vamp", SHAPE, "binary", n_components=50)
    z = torch.randn(3, 17, m.prior.dim) * 2
    direct = vamp_log_prob_componentwise(m.prior, z).detach().numpy()
    np.testing.assert_allclose(m.prior.log_prob(z).detach().numpy(), direct, rtol=1e-5, atol=1e-3)
    with m.prior.frozen():  # the cached form of evaluation
        np.testing.assert_allclose(m.prior.log_prob(z).numpy(), direct, rtol=1e-5, atol=1e-3)
    m.prior.log_prob(z).sum().backward()  # outside frozen() the pseudo-inputs get gradients
    assert m.prior.pseudo_inputs.grad is not None and m.prior.pseudo_inputs.grad.abs().sum() > 0


def test_logistic256_bin_log_prob_matches_float64_and_its_gradients_too():
    # every bin, against the textbook formula in float64 with truly infinite outer edges, over the heads' whole
    # range of means and log-scales and their clamps' extremes: the value to 2e-5 nats a pixel and both gradients
    g = torch.Generator().manual_seed(3)
    mean = torch.cat([torch.rand(40, generator=g) * (1 - 2 / 512) + 1 / 512, torch.tensor([1 / 512, 1 - 1 / 512, 0.5])])
    log_scale = torch.cat([torch.rand(40, generator=g) * -4.5, torch.tensor([-4.5, 0.0, -4.5])])
    x = ((torch.arange(256) + 0.5) / 256)[None, :].expand(43, 256)
    mean = mean[:, None].expand(43, 256).clone().requires_grad_()
    log_scale = log_scale[:, None].expand(43, 256).clone().requires_grad_()
    ours = DiscretizedLogistic256(mean[..., None], log_scale[..., None]).log_prob(x[..., None])
    m64, s64 = mean.detach().double().requires_grad_(), log_scale.detach().double().requires_grad_()
    ref = logistic_bin_log_prob_float64(x, m64, s64)
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), rtol=0, atol=2e-5)
    ours.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(mean.grad.numpy(), m64.grad.numpy(), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(log_scale.grad.numpy(), s64.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_logistic256_from_logits_without_gradients_matches_float64_in_every_bin_and_at_the_clamps():
    # the fused path of importance sampling: x [G, D] against logits [R, G, D], every bin (outer ones too),
    # pre-activations past both clamps of the mean and of the log-scale; the same distribution as the plain
    # path with gradients, each pixel to 2e-5 nats of float64's textbook formula
    g = torch.Generator().manual_seed(5)
    x = ((torch.arange(256) + 0.5) / 256).reshape(8, 32)
    logits = torch.randn(300, 8, 32, generator=g) * 4
    raw_log_scale = torch.rand(300, 8, 32, generator=g) * 6 - 5.5
    logits[:20], logits[20:40], raw_log_scale[40:60], raw_log_scale[60:80] = 30.0, -30.0, -10.0, 2.0
    mean = torch.clamp(torch.sigmoid(logits), 1 / 512, 1 - 1 / 512)
    ref = logistic_bin_log_prob_float64(x.expand(300, 8, 32), mean, raw_log_scale.clamp(-4.5, 0.0))
    with torch.no_grad():
        fused = DiscretizedLogistic256.from_logits(logits, raw_log_scale).log_prob(x)
        one = lambda i: DiscretizedLogistic256.from_logits(logits[..., i : i + 1], raw_log_scale[..., i : i + 1])
        per_pixel = torch.stack([one(i).log_prob(x[:, i : i + 1]) for i in range(32)], -1)
    np.testing.assert_allclose(per_pixel.numpy(), ref.numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(fused.numpy(), ref.sum(-1).numpy(), rtol=1e-6, atol=1e-4)
    plain = DiscretizedLogistic256.from_logits(logits.requires_grad_(), raw_log_scale).log_prob(x)  # with gradients
    np.testing.assert_allclose(fused.numpy(), plain.detach().numpy(), rtol=1e-6, atol=1e-4)


def test_logistic256_gradient_is_the_derivative_where_the_mean_sits_on_a_bin_edge():
    # a = 0 or b = 0 exactly: the |a| in the stable formula has a kink there, the log-probability does not
    mean = torch.tensor([128 / 256, 129 / 256], requires_grad=True)
    log_scale = torch.tensor([-3.0, -3.0], requires_grad=True)
    x = torch.tensor([127.5 / 256, 128.5 / 256])  # bin 127 (upper edge = mean), bin 128 (lower edge = mean)
    DiscretizedLogistic256(mean, log_scale).log_prob(x).backward()
    m64, s64 = mean.detach().double().requires_grad_(), log_scale.detach().double().requires_grad_()
    logistic_bin_log_prob_float64(x, m64, s64).sum().backward()
    np.testing.assert_allclose(mean.grad.numpy(), m64.grad.numpy(), rtol=1e-5)
    np.testing.assert_allclose(log_scale.grad.numpy(), s64.grad.numpy(), rtol=1e-5)


@pytest.mark.parametrize("kind,m,n,d", [("bernoulli", 9, 13, 50), ("logistic", 5, 7, 36), ("logistic", 130, 20, 50),
                                        ("logistic", 3, 4, 784)])
def test_a_likelihoods_pairwise_matrix_equals_its_per_pair_log_prob(kind, m, n, d):
    g = torch.Generator().manual_seed(m)
    if kind == "bernoulli":
        dist = Bernoulli(torch.randn(m, d, generator=g) * 6)
        x = torch.bernoulli(torch.full((n, d), 0.4), generator=g)
    else:
        mean = torch.rand(m, d, generator=g).clamp(1 / 512, 1 - 1 / 512)
        log_scale = -4.5 * torch.rand(m, d, generator=g)
        log_scale[0], mean[1] = 0.0, 1 / 512  # the clamps' extremes
        x = (torch.randint(0, 256, (n, d), generator=g).float() + 0.5) / 256
        x[0], x[1] = 0.5 / 256, 255.5 / 256  # the outer bins (the tails)
        dist = DiscretizedLogistic256(mean, log_scale)
    fast = dist.log_prob_pairwise(x).numpy()
    per_pair = torch.stack([dist.log_prob(x[j : j + 1]) for j in range(n)], 1).reshape(m, n)
    np.testing.assert_allclose(fast, per_pair.numpy(), rtol=2e-6, atol=1e-4)
    if kind == "logistic":  # and the whole-table gather, another summation order
        np.testing.assert_allclose(fast, logistic_pairwise_whole_table(dist, x).numpy(), rtol=2e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["hvae", "pixelhvae"])
@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_two_level_log_prior_is_p_z1_given_z2_times_p_z2(name, prior):
    m = models.build(name, prior, SHAPE, "binary", n_components=20).eval()
    z = torch.randn(5, 80)
    z1, z2 = z[:, :40], z[:, 40:]
    with torch.no_grad():
        mean, logvar = m.p_z1(z2)
        want = log_normal_diag(z1, mean, logvar)
        want = want + (log_standard_normal(z2) if prior == "standard" else vamp_log_prob_componentwise(m.prior, z2))
        np.testing.assert_allclose(m.log_prior(z).numpy(), want.numpy(), rtol=1e-5, atol=1e-3)


# --- the PixelCNN is autoregressive ------------------------------------------------------------------
def test_pixelcnn_output_at_pixel_k_ignores_pixels_at_and_after_k():
    m = models.build("pixelhvae", "standard", (1, 8, 8), "binary").eval()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((1, 1, 8, 8), 0.5))
    zproj = m.project(torch.randn(1, 80))
    with torch.no_grad():
        base = m.decode(x, zproj).logits.view(8, 8)
        for k in [0, 9, 27, 40, 63]:
            i, j = divmod(k, 8)
            x2 = x.clone().view(-1)
            x2[k:] = 1 - x2[k:]  # change pixel k and everything after it
            out = m.decode(x2.view(1, 1, 8, 8), zproj).logits.view(-1)
            assert torch.allclose(out[: k + 1], base.view(-1)[: k + 1], atol=1e-6), k
            if k < 63:  # and the later outputs do depend on pixel k (the mask is not trivially zero)
                assert not torch.allclose(out[k + 1 :], base.view(-1)[k + 1 :])


# --- the interface, for every model and prior ---------------------------------------------------------
ALL = [(m, p) for m in ("vae", "hvae", "pixelhvae") for p in ("standard", "vamp")]


def _tiny(name, prior, input_type="binary", shape=(1, 8, 8)):
    return models.build(name, prior, shape, input_type, n_components=10)


@pytest.mark.parametrize("name,prior", ALL)
@pytest.mark.parametrize("input_type", ["binary", "gray"])
def test_pairwise_blocks_equal_per_pair_calls(name, prior, input_type):
    m = _tiny(name, prior, input_type).eval()
    x = images(5, input_type, (1, 8, 8), p=0.4)
    with torch.no_grad():
        z = m.posterior_mean(x[:4]) + 0.3 * torch.randn(4, m.latent_dim)
        L = m.log_likelihood_matrix(x, z)
        assert L.shape == (4, 5)
        for i in range(4):
            for j in range(5):
                want = m.log_likelihood(x[j : j + 1], z[i].view(1, 1, -1))[0, 0]
                assert L[i, j].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("name,prior", [c if c == ("vae", "standard") else pytest.param(*c, marks=pytest.mark.slow)
                                        for c in ALL])  # the fast tier: the VAE; the slow tier: every model
def test_importance_sampling_is_above_the_elbo_and_stabilises_with_s(name, prior):
    from glossy.importance import importance_sampling
    from glossy.memory import Plan

    m = _tiny(name, prior)
    big = 1000 if name != "pixelhvae" else 250  # the PixelCNN costs a decoder pass per sample
    x = images(48 if name != "pixelhvae" else 16, "binary", (1, 8, 8), p=0.4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(40):  # fit q(z|x) a little, as training would
        opt.zero_grad()
        m.elbo(x)["loss"].mean().backward()
        opt.step()
    plan = Plan(points=48, samples=250, matrix_rows=1, matrix_cols=1)
    with m.frozen():
        torch.manual_seed(1)
        est = {s: importance_sampling(m, x, s, plan, torch.device("cpu"))[0].mean().item() for s in (1, 10, 100)}
        lp_big, elbo_big = importance_sampling(m, x, big, plan, torch.device("cpu"))
        lp_big2, _ = importance_sampling(m, x, big, plan, torch.device("cpu"))
    est[big] = lp_big.mean().item()
    elbo = elbo_big.mean().item()  # the mean log-weight over `big` samples: a precise ELBO
    gain = est[big] - elbo
    assert gain > 0  # log p^ >= ELBO on average
    values = [est[s] for s in sorted(est)]
    assert all(b >= a - 0.1 * gain for a, b in zip(values, values[1:]))  # E log p^_S grows with S
    assert values[-1] - values[-2] < values[1] - values[0]  # ... by ever smaller steps
    assert abs(lp_big.mean().item() - lp_big2.mean().item()) < 0.3 * gain  # and settles


@pytest.mark.parametrize("name,prior", ALL)
@pytest.mark.parametrize("input_type", ["binary", "gray", "continuous"])
def test_one_optimisation_step_runs_and_changes_the_weights(name, prior, input_type):
    shape = (3, 8, 8) if input_type == "continuous" else (1, 8, 8)
    m = _tiny(name, prior, input_type, shape)
    x = images(4, input_type, shape, p=0.4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in m.parameters()]
    terms = m.elbo(x, beta=0.5)
    assert terms["loss"].shape == (4,) and torch.isfinite(terms["loss"]).all()
    terms["loss"].mean().backward()
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, m.parameters()))
    assert changed >= len(before) - 2  # every layer that the loss touches moved


def test_sampling_produces_images_in_range():
    for name in ("vae", "pixelhvae"):
        m = _tiny(name, "vamp")
        s = m.sample(3)
        assert s.shape == (3, 1, 8, 8) and (s >= 0).all() and (s <= 1).all()


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(KeyError, match="vae, hvae, pixelhvae"):
        models.build("transformer", "standard", SHAPE, "binary")
    with pytest.raises(KeyError, match="standard, vamp"):
        models.build("vae", "flow", SHAPE, "binary")


@pytest.mark.parametrize("logvar", [-6.0, 2.0])  # the encoder's clamps: the narrowest and widest components
@pytest.mark.parametrize("where", ["near", "far"])
def test_vampprior_density_at_the_logvar_clamps_matches_float64(logvar, where):
    # the expanded quadratic [z^2, z] @ W + c cancels for narrow components with means away from 0 (float32
    # lost 0.044 nats here before the largest component was recomputed directly)
    gen = torch.Generator().manual_seed(0)
    dim, k = 40, 500
    means = torch.randn(k, dim, generator=gen) * 3
    logvars = torch.full((k, dim), logvar)
    prior = VampPrior(dim, lambda u: (means, logvars), (1, 2, 2), n_components=k, init_mean=0.5, init_std=0.3)
    if where == "near":  # z drawn from the components: one of them dominates the sum
        pick = torch.randint(k, (2000,), generator=gen)
        z = means[pick] + torch.randn(2000, dim, generator=gen) * math.exp(logvar / 2)
    else:  # z between components, where the density is tiny (log p down to -1e5): float32's own rounding
        z = torch.randn(2000, dim, generator=gen) * 3  # of such a number is ~1e-2, hence the relative part
    with torch.no_grad():
        got = prior.log_prob(z).double()
    d = z.double()[:, None, :] - means.double()
    per = -0.5 * (dim * math.log(2 * math.pi) + dim * logvar + (d * d).sum(-1) / math.exp(logvar))
    want = torch.logsumexp(per, -1) - math.log(k)
    assert ((got - want).abs() <= 1e-3 + 1e-6 * want.abs()).all()  # cancellation was 0.044 at |log p| ~ 70


@pytest.mark.parametrize("name,input_type", [("vae", "binary"), ("hvae", "binary"), ("vae", "continuous"),
                                             ("pixelhvae", "binary")])
def test_without_gradients_the_in_place_layers_give_the_same_bits(name, input_type, monkeypatch):
    """The gated layers, the Bernoulli head and its log-probability run in place when no gradient is asked for
    (importance sampling, the glossy matrices): the same numbers bit for bit as the differentiable forms, with
    softplus as torch computes it (the bounded logits' log(1 + e^l) is checked against float64 below)."""
    plain_init = Bernoulli.__init__
    monkeypatch.setattr(Bernoulli, "__init__", lambda self, logits, bounded=False: plain_init(self, logits))
    m = models.build(name, "standard", (1, 28, 28), input_type).eval()
    x = images(3, input_type, (1, 28, 28))
    torch.manual_seed(1)
    with_grad = m.log_importance_weights(x[:1], 9)
    assert with_grad.requires_grad
    torch.manual_seed(1)
    with torch.no_grad():
        assert torch.equal(m.log_importance_weights(x[:1], 9), with_grad.detach())
        z = m.sample_prior(4)
        assert torch.equal(m.log_likelihood_matrix(x, z), m.log_likelihood_matrix(x, z))
    g = torch.Generator().manual_seed(2)
    logits, xs = torch.randn(5, 7, generator=g), (torch.rand(3, 5, 7, generator=g) < 0.5).float()
    want = (xs * logits - torch.nn.functional.softplus(logits)).sum(-1)  # x broader than the logits...
    with torch.no_grad():
        assert torch.equal(Bernoulli(logits.clone()).log_prob(xs), want)  # ...keeps the broadcasting form
        assert torch.equal(Bernoulli(logits.clone()).log_prob(xs[0]), want[0])  # the in-place form, same bits


@pytest.mark.parametrize("seed", [0, 1])
def test_the_bounded_logits_softplus_is_as_accurate_as_torchs(seed):
    """Without gradients, the heads' logits (|l| <= LOGIT_MAX) take softplus as log(1 + e^l), which rounds
    1 + e^l: its worst error an element against float64, over the whole clamped range and its ends, is no larger
    than torch's softplus's, and the summed log-probability's error is float32 summation's, as before."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.rand(64, 784, generator=g) * 2 - 1) * LOGIT_MAX
    logits[0, :2] = torch.tensor([LOGIT_MAX, -LOGIT_MAX])
    x = (torch.rand(64, 784, generator=g) < 0.4).float()
    exact = (x.double() * logits.double() - torch.nn.functional.softplus(logits.double())).sum(-1)
    with torch.no_grad():
        fast = Bernoulli(logits.clone(), bounded=True).log_prob(x).double()
        plain = Bernoulli(logits.clone()).log_prob(x).double()
    assert not torch.equal(fast, plain)  # the bounded form is in use
    fast_el = logits.exp().add_(1.0).log_().double() - torch.nn.functional.softplus(logits.double())
    plain_el = torch.nn.functional.softplus(logits).double() - torch.nn.functional.softplus(logits.double())
    assert fast_el.abs().max() <= plain_el.abs().max() * 1.01  # 5.3e-7 and 5.4e-7 where measured
    assert (fast - exact).abs().mean() <= 1.1 * (plain - exact).abs().mean()
    assert (fast - exact).abs().max() <= 1e-6 * exact.abs().max()
