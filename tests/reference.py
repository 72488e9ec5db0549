"""Plain reference implementations that the tests compare glossy's fast paths against (test-only code)."""

from __future__ import annotations

import math

import torch

from glossy_models.likelihoods import N_BINS
from glossy_models.priors import log_normal_diag


def vamp_log_prob_componentwise(prior, z: torch.Tensor) -> torch.Tensor:
    """A VampPrior's density component by component: log (1/K) sum_k N(z; m_k, diag v_k) over [..., K, dim]."""
    mean, logvar = prior.components()
    return torch.logsumexp(log_normal_diag(z.unsqueeze(-2), mean, logvar), -1) - math.log(prior.n_components)


def logistic_pairwise_whole_table(dist, x: torch.Tensor, block: int = 64) -> torch.Tensor:
    """DiscretizedLogistic256's [M, N] matrix the plain way: the whole [M, D, 256] bin table, then per block of
    images a gather [M, block, D] and its sum."""
    n, d = x.shape[0], x.reshape(x.shape[0], -1).shape[1]
    k = torch.clamp(torch.floor(x.reshape(n, d) * N_BINS), 0, N_BINS - 1).long()
    flat_index = torch.arange(d, device=x.device) * N_BINS + k  # [N, D]
    table = dist.bin_table().reshape(dist.loc.shape[0], d * N_BINS)  # [M, D*256]
    out = torch.empty(table.shape[0], n, dtype=table.dtype, device=table.device)
    for j in range(0, n, block):
        out[:, j : j + block] = table[:, flat_index[j : j + block]].sum(-1)  # [M, n_b]
    return out


def logistic_bin_log_prob_float64(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) of the 256-bin discretised logistic, pixel by pixel, the textbook way in float64:
    log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) - softplus(b) + log(-expm1(b - a)) for the inner bins, and
    the open outer bins' logsigmoid(a) and -softplus(b), each formula on finite numbers only."""
    x, mean, log_scale = x.double(), mean.double(), log_scale.double()
    k = torch.clamp(torch.floor(x * N_BINS), 0, N_BINS - 1)
    inv = torch.exp(-log_scale)
    a, b = ((k + 1) / N_BINS - mean) * inv, (k / N_BINS - mean) * inv
    inner = torch.nn.functional.logsigmoid(a) - torch.nn.functional.softplus(b) + torch.log(-torch.expm1(b - a))
    first, last = torch.nn.functional.logsigmoid(a), -torch.nn.functional.softplus(b)
    return torch.where(k == 0, first, torch.where(k == N_BINS - 1, last, inner))
