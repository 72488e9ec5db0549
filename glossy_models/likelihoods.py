"""Normalised observation models l(x|z): Bernoulli and the 256-bin discretised logistic.

Every `log_prob` returns a log-probability (never its negative) summed over pixels; every
`log_prob_pairwise` returns the [M, N] matrix log l(x_j | params_i) for M parameter sets and N images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The reference clamps Bernoulli means to [1e-5, 1 - 1e-5]; clamping the logits at logit(1 - 1e-5)
# is the same distribution, still normalised, and keeps the pairwise matrix a single matmul.
LOGIT_MAX = math.log((1 - 1e-5) / 1e-5)
N_BINS = 256
LOG_2PI = math.log(2 * math.pi)
_EDGE = 1.0e4  # stands for +-inf at the outer bins, finite so that gradients stay finite


class Bernoulli:
    """Independent Bernoulli pixels with logits [..., D]."""

    def __init__(self, logits: torch.Tensor, bounded: bool = False) -> None:
        self.logits = logits
        self.bounded = bounded  # |logits| <= LOGIT_MAX (the heads' clamp): softplus may be log(1 + e^l)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def sample(self) -> torch.Tensor:
        return torch.bernoulli(self.mean)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        # x [..., D] broadcast against logits [..., D] -> [...]
        if not torch.is_grad_enabled() and torch.broadcast_shapes(x.shape, self.logits.shape) == self.logits.shape:
            # without gradients, in place: -(softplus(l) - x l) summed, two fewer temporaries of [..., D]; on
            # bounded logits softplus is log(1 + e^l), 3.3x faster than softplus's log1p (not vectorised on the
            # CPU) with the same worst error against float64 (scripts/bernoulli_logprob_speed.py): e^l >= 1e-5,
            # so rounding 1 + e^l costs under 6e-8 nats a pixel, below the float32 rounding of softplus near 0.7
            t = self.logits.exp().add_(1.0).log_() if self.bounded else F.softplus(self.logits)
            return t.sub_(torch.mul(self.logits, x)).sum(-1).neg_()
        return (x * self.logits - F.softplus(self.logits)).sum(-1)

    def log_prob_pairwise(self, x: torch.Tensor) -> torch.Tensor:
        # logits [M, D], x [N, D] -> [M, N]: one matrix product on logits, the shift by the softplus
        # sums folded into it (addmm), so the [M, N] result is written once
        logits = self.logits.reshape(self.logits.shape[0], -1)
        shift = -F.softplus(logits).sum(-1, keepdim=True)  # [M, 1]
        return torch.addmm(shift, logits, x.reshape(x.shape[0], -1).T.to(logits.dtype))


class UnitGaussian:
    """Independent unit-variance Gaussian pixels with means [..., D]: the density that a model trained with a
    squared-error reconstruction loss assumes (pythae's `mse`, as its own `get_nll` normalises it)."""

    def __init__(self, mean: torch.Tensor) -> None:
        self.loc = mean

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def sample(self) -> torch.Tensor:
        return self.loc + torch.randn_like(self.loc)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d = self.loc.shape[-1]
        return -0.5 * ((x - self.loc) ** 2).sum(-1) - 0.5 * d * LOG_2PI

    def log_prob_pairwise(self, x: torch.Tensor) -> torch.Tensor:
        # means [M, D], x [N, D] -> [M, N]: -|x - mu|^2 / 2 = mu.x - |mu|^2 / 2 - |x|^2 / 2, one matrix product
        mu = self.loc.reshape(self.loc.shape[0], -1)
        xf = x.reshape(x.shape[0], -1).to(mu.dtype)
        shift = -0.5 * (mu * mu).sum(-1, keepdim=True) - 0.5 * mu.shape[1] * LOG_2PI  # [M, 1]
        return torch.addmm(shift, mu, xf.T).sub_(0.5 * (xf * xf).sum(-1))


def _bin_edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper edges of the bin [k/256, (k+1)/256] holding x; the outer bins extend to +-inf."""
    k = torch.clamp(torch.floor(x * N_BINS), 0, N_BINS - 1)
    lower = torch.where(k == 0, torch.full_like(x, -_EDGE), k / N_BINS)
    upper = torch.where(k == N_BINS - 1, torch.full_like(x, _EDGE), (k + 1) / N_BINS)
    return lower, upper


def _logistic_bin_log_prob(lower, upper, mean, inv_scale) -> torch.Tensor:
    """log(sigmoid(a) - sigmoid(b)), a = (upper - mean)/s, b = (lower - mean)/s, computed stably with one
    log, two exp and one tanh per pixel. sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), and
    with u = a - b = (upper - lower)/s, t = tanh(u/2): 1 - e^-u = 2t / (1 + t), exact for small u where
    1 - e^-u would cancel; log sigmoid(a) = min(a, 0) - log(1 + e^-|a|) and log sigmoid(-b) = -max(b, 0)
    - log(1 + e^-|b|), so that the three logs fold into one of a product in (0, 8]. The same numbers as
    logsigmoid(a) - softplus(b) + log(-expm1(b - a)), three times faster on the CPU, where softplus,
    logsigmoid and expm1 are not vectorised (~10 ns an element against ~1 ns for exp and log), and closer to
    float64 (tests/test_models.py). min(a, 0) is written (a - |a|)/2 so that its gradient at a = 0 is the
    derivative's 1/2, and the two halves are kept apart so that a finite value is never added to the
    outer bins' ~1e4/s edge before it cancels."""
    a = (upper - mean) * inv_scale
    b = (lower - mean) * inv_scale
    t = torch.tanh((upper - lower) * inv_scale * 0.5)
    abs_a, abs_b = a.abs(), b.abs()
    den = (1 + t) * (1 + torch.exp(-abs_a)) * (1 + torch.exp(-abs_b))
    return ((a - abs_a) - (b + abs_b)) * 0.5 + torch.log(2 * t / den)


class DiscretizedLogistic256:
    """Logistic density integrated over 256 bins of [0, 1]; the outer bins take the tails, so the
    256 probabilities sum to one (the reference omits the tails and is not normalised).

    The heads build it `from_logits`: the mean is sigmoid(logits) clamped to [1/512, 1 - 1/512] and the
    log-scale is clamped to [LOG_SCALE_MIN, 0], both made only when asked for, so that `log_prob` without
    gradients runs from the logits in cache-sized pieces (`_fused_log_prob`)."""

    def __init__(self, mean: torch.Tensor, log_scale: torch.Tensor) -> None:
        self._loc, self._log_scale = mean, log_scale
        self._logits = self._raw_log_scale = None

    @classmethod
    def from_logits(cls, logits: torch.Tensor, raw_log_scale: torch.Tensor) -> DiscretizedLogistic256:
        dist = cls(None, None)
        dist._logits, dist._raw_log_scale = logits, raw_log_scale
        return dist

    @property
    def loc(self) -> torch.Tensor:
        if self._loc is None:
            self._loc = _clamped_mean(self._logits)
        return self._loc

    @property
    def log_scale(self) -> torch.Tensor:
        if self._log_scale is None:
            self._log_scale = torch.clamp(self._raw_log_scale, LOG_SCALE_MIN, 0.0)
        return self._log_scale

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.loc).clamp(1e-6, 1 - 1e-6)
        y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
        k = torch.clamp(torch.floor(y * N_BINS), 0, N_BINS - 1)
        return (k + 0.5) / N_BINS

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self._logits is not None and not (torch.is_grad_enabled() and self._logits.requires_grad) \
                and x.dim() == 2 and self._logits.shape[-2:] == x.shape:
            return _fused_log_prob(self._logits, self._raw_log_scale, x)
        lower, upper = _bin_edges(x)
        return _logistic_bin_log_prob(lower, upper, self.loc, torch.exp(-self.log_scale)).sum(-1)

    def bin_table(self) -> torch.Tensor:
        """[M, D, 256] log-probabilities of every bin, for every parameter set and pixel."""
        k = torch.arange(N_BINS, device=self.loc.device, dtype=self.loc.dtype)
        lower, upper = _bin_edges((k + 0.5) / N_BINS)
        mean = self.loc.reshape(self.loc.shape[0], -1, 1)
        inv = torch.exp(-self.log_scale).reshape(mean.shape)
        return _logistic_bin_log_prob(lower, upper, mean, inv)

    def log_prob_pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """params [M, D], x [N, D] -> [M, N], in cache-sized pieces: for a block of candidates and a slice
        of pixels, the bin table [pixels * 256, candidates] (~1 MiB) is made and every image's entries
        are gathered and summed from it at once (`embedding_bag`), then the next slice adds on. No
        [M, D, 256] table and no [M, N, D] gather is ever materialised. The same numbers as
        the whole-table gather (tests/reference.py) up to float32 summation order."""
        m, n = self.loc.shape[0], x.shape[0]
        loc = self.loc.reshape(m, -1)
        d = loc.shape[1]
        inv = torch.exp(-self.log_scale.reshape(m, d))
        k = torch.clamp(torch.floor(x.reshape(n, d).to(loc.dtype) * N_BINS), 0, N_BINS - 1).long()
        edges = _edges(loc)
        out = torch.empty(m, n, dtype=loc.dtype, device=loc.device)
        blocks: list[torch.Tensor] = []
        for i in range(0, m, PAIRWISE_CANDIDATES):
            loc_t = loc[i : i + PAIRWISE_CANDIDATES].T.contiguous()  # [D, mb]
            inv_t = inv[i : i + PAIRWISE_CANDIDATES].T.contiguous()
            acc = None
            for d0 in range(0, d, PAIRWISE_PIXELS):
                d1 = min(d, d0 + PAIRWISE_PIXELS)
                table = _bin_table_slice(edges, loc_t[d0:d1], inv_t[d0:d1])  # [(d1 - d0) * 256, mb]
                idx = k[:, d0:d1] + torch.arange(d1 - d0, device=k.device) * N_BINS  # [N, d1 - d0]
                part = F.embedding_bag(idx, table, mode="sum")  # [N, mb]: sum over the slice's pixels
                acc = part if acc is None else acc + part if part.requires_grad else acc.add_(part)
            if out.requires_grad or acc.requires_grad:  # with gradients (glossy.search): no in-place writes
                blocks.append(acc.T)
            else:
                out[i : i + loc_t.shape[1]] = acc.T
        return torch.cat(blocks) if blocks else out


# Block sizes of DiscretizedLogistic256.log_prob_pairwise: a table slice of 8 pixels x 256 bins x 128
# candidates is 1 MiB of float32 (one core's L2 on the EPYC these were tuned on; measured 0.7 ns per
# (pair, pixel) including the table, against ~20 ns for the whole-table gather of the plain path).
PAIRWISE_CANDIDATES = 128
PAIRWISE_PIXELS = 8


def _edges(like: torch.Tensor) -> torch.Tensor:
    """The 257 bin edges 0, 1/256, ..., 1 with the outer two replaced by -+_EDGE (the tails)."""
    e = torch.arange(N_BINS + 1, device=like.device, dtype=like.dtype) / N_BINS
    e[0], e[-1] = -_EDGE, _EDGE
    return e


def _bin_table_slice(edges: torch.Tensor, loc_t: torch.Tensor, inv_t: torch.Tensor) -> torch.Tensor:
    """log P(bin k) for pixels x candidates given as loc_t, inv_t [P, C]: [P * 256, C].
    With c_t = (e_t - mean) / s at the 257 edges, bin k is log(sigmoid(c_{k+1}) - sigmoid(c_k))
    = log sigmoid(c_{k+1}) - softplus(c_k) + log(1 - exp(c_k - c_{k+1})), where the last term is
    log(-expm1(-1 / (256 s))) for the inner bins and 0 for the two outer ones (an infinite edge): one
    exp and one log per edge instead of four transcendentals per bin."""
    if torch.is_grad_enabled() and (loc_t.requires_grad or inv_t.requires_grad):  # the same, out of place
        c = (edges.view(1, -1, 1) - loc_t.unsqueeze(1)) * inv_t.unsqueeze(1)
        h = c.abs()
        lg = torch.log1p(torch.exp(-h))
        inner = torch.log(-torch.expm1(-inv_t / N_BINS)).unsqueeze(1)
        table = ((c[:, 1:] - h[:, 1:]) - (c[:, :-1] + h[:, :-1])) * 0.5 - lg[:, 1:] - lg[:, :-1]
        table = torch.cat([table[:, :1], table[:, 1:-1] + inner, table[:, -1:]], 1)
        return table.reshape(-1, table.shape[-1])
    c = (edges.view(1, -1, 1) - loc_t.unsqueeze(1)).mul_(inv_t.unsqueeze(1))  # [P, 257, C]
    # log sigmoid(c) = (c - |c|)/2 - L and softplus(c) = (c + |c|)/2 + L with L = log(1 + e^-|c|): one exp
    # and one log per edge (softplus is not vectorised on the CPU)
    h = c.abs()
    lg = torch.neg(h).exp_().add_(1).log_()
    table = (c[:, 1:] - h[:, 1:]).sub_(c[:, :-1] + h[:, :-1]).mul_(0.5).sub_(lg[:, 1:]).sub_(lg[:, :-1])
    table[:, 1:-1] += torch.log(-torch.expm1(-inv_t / N_BINS)).unsqueeze(1)
    return table.reshape(-1, table.shape[-1])


LOG_SCALE_MIN = -4.5  # the heads' clamp of the log-scale (the reference's)
MEAN_MIN = 1.0 / 512


def _clamped_mean(logits: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(logits), MEAN_MIN, 1.0 - MEAN_MIN)


# _fused_log_prob works on pieces of about this many elements ([rows, points, pixels]): its ~25 passes then
# run in the core's L2 cache instead of memory (256 KiB of float32 a temporary)
FUSED_ELEMENTS = 2**16


def _fused_log_prob(logits: torch.Tensor, raw_log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log l(x | logits, raw log-scales) summed over pixels, [...]: the heads' clamps, then every bin's
    log-probability, for x [G, D] broadcast against logits [..., G, D], without gradients. The same
    distribution as `_logistic_bin_log_prob` (tests/test_models.py, against float64), in fewer passes:
    see `_inner_bin_log_prob`. The outer bins (k = 0, 255) are written over afterwards from their own
    formula, at their positions only."""
    g, d = x.shape
    hm, hv = logits.reshape(-1, g * d), raw_log_scale.reshape(-1, g * d)
    k = torch.clamp(torch.floor(x.to(logits.dtype) * N_BINS), 0, N_BINS - 1).reshape(-1)
    centre = (k + 0.5) / N_BINS
    outer = torch.nonzero((k == 0) | (k == N_BINS - 1)).flatten()
    side = torch.where(k[outer] == 0, 1.0, -1.0).to(logits.dtype)  # log P = log sigmoid(y + side * c)
    out = torch.empty(hm.shape[0], g, dtype=logits.dtype, device=logits.device)
    rows = max(1, FUSED_ELEMENTS // (g * d))
    for r in range(0, hm.shape[0], rows):
        lp = _inner_bin_log_prob(hm[r : r + rows], hv[r : r + rows], centre)
        if outer.numel():
            lp[:, outer] = _outer_bin_log_prob(hm[r : r + rows, outer], hv[r : r + rows, outer], centre[outer], side)
        out[r : r + rows] = lp.view(-1, g, d).sum(-1)
    return out.reshape(logits.shape[:-1])


def _inner_bin_log_prob(hm: torch.Tensor, hv: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """log P(bin) for bins of width 1/256 around `centre`, from the heads' pre-activations. With
    c = (centre - mean)/s and y = 1/(512 s) (half the bin in units of s), e = exp(-|c|):
    sigmoid(c + y) - sigmoid(c - y) = 2 sinh(y) e / (1 + 2 cosh(y) e + e^2), symmetric in c, with no
    cancellation (e <= 1, the denominator in [1, 4 cosh(y)]). y <= exp(4.5)/512 < 0.18 after the
    log-scale's clamp, where log(sinh(y)/y) = y^2/6 - y^4/180 + 2y^6/2835 and 2 cosh(y) = 2 + y^2 + y^4/12
    + y^6/360 to 1e-10 (the next terms), so that log P = -log s - log 256 + log(sinh(y)/y) - |c| - log(1 +
    2 cosh(y) e + e^2): three transcendentals (sigmoid, exp, exp) and one log a pixel, all in place."""
    ls = hv.clamp(LOG_SCALE_MIN, 0.0)
    inv = torch.neg(ls).exp_()
    a = torch.sigmoid(hm).clamp_(MEAN_MIN, 1.0 - MEAN_MIN).sub_(centre).mul_(inv).abs_()
    e = torch.neg(a).exp_()
    y2 = inv.mul_(1.0 / (2 * N_BINS)).square_()
    lp = (y2 * (2.0 / 2835)).sub_(1.0 / 180).mul_(y2).add_(1.0 / 6).mul_(y2)
    den = (y2 * (1.0 / 360)).add_(1.0 / 12).mul_(y2).add_(1.0).mul_(y2).add_(2.0)
    den.add_(e).mul_(e).add_(1.0).log_()
    return lp.sub_(ls).sub_(a).sub_(den).sub_(math.log(N_BINS))


def _outer_bin_log_prob(hm, hv, centre, side) -> torch.Tensor:
    """log P of the outer bins: log sigmoid(y + c) for bin 0 (side 1), log sigmoid(y - c) for bin 255
    (side -1), with c and y as in `_inner_bin_log_prob`; log sigmoid(t) = min(t, 0) - log(1 + e^-|t|)."""
    inv = torch.exp(-hv.clamp(LOG_SCALE_MIN, 0.0))
    t = (centre - _clamped_mean(hm)).mul_(inv).mul_(side).add_(inv * (1.0 / (2 * N_BINS)))
    return torch.clamp(t, max=0.0) - torch.log1p(torch.exp(-t.abs()))


class BernoulliHead(nn.Module):
    """Features -> Bernoulli logits (the reference's sigmoid mean layer, in logit space)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.mean = nn.Linear(n_in, n_out)

    def forward(self, h: torch.Tensor) -> Bernoulli:
        if not torch.is_grad_enabled():  # the same values, in place on the product's output
            return Bernoulli(self.mean(h).clamp_(-LOGIT_MAX, LOGIT_MAX), bounded=True)
        return Bernoulli(torch.clamp(self.mean(h), -LOGIT_MAX, LOGIT_MAX), bounded=True)


class Logistic256Head(nn.Module):
    """Features -> discretised logistic: mean sigmoid-clamped to [1/512, 1-1/512], log-scale in [-4.5, 0]."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.mean = nn.Linear(n_in, n_out)
        self.logvar = nn.Linear(n_in, n_out)

    def forward(self, h: torch.Tensor) -> DiscretizedLogistic256:
        return DiscretizedLogistic256.from_logits(self.mean(h), self.logvar(h))


class ConvBernoulliHead(nn.Module):
    """PixelCNN features [B, 64, H, W] -> Bernoulli over the flattened image."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.mean = nn.Conv2d(c_in, c_out, 1)

    def forward(self, h: torch.Tensor) -> Bernoulli:
        return Bernoulli(torch.clamp(self.mean(h).flatten(1), -LOGIT_MAX, LOGIT_MAX), bounded=True)


class ConvLogistic256Head(nn.Module):
    """PixelCNN features -> discretised logistic over the flattened image (1x1 convs without bias)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.mean = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.logvar = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, h: torch.Tensor) -> DiscretizedLogistic256:
        return DiscretizedLogistic256.from_logits(self.mean(h).flatten(1), self.logvar(h).flatten(1))


LIKELIHOODS = {"binary": (BernoulliHead, ConvBernoulliHead), "gray": (Logistic256Head, ConvLogistic256Head),
               "continuous": (Logistic256Head, ConvLogistic256Head)}


def make_head(input_type: str, n_in: int, n_out: int, conv: bool = False) -> nn.Module:
    if input_type not in LIKELIHOODS:
        raise ValueError(f"unknown input type {input_type!r}; valid: {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[input_type][int(conv)](n_in, n_out)
