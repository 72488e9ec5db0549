"""The interval stage: percentile bootstrap intervals of the NLL, the glossy statistics and the lower bounds,
all resamples of the data points at once (one weighted log-sum-exp per candidate and resample)."""

from __future__ import annotations

import math

import torch

from .storage import EXP_FLOOR, row_block


def bootstrap_counts(n: int, n_boot: int, seed: int = 0) -> torch.Tensor:
    """[B, N] float64 resample counts of N data points, B resamples (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return counts


def resampled_log_c(L: torch.Tensor, log_px: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[M, B] log c_b(z_i) = log (1/N) sum_j counts[b, j] l(x_j | z_i) / tau(x_j) for a block of rows of L
    [M, N]: one float64 matrix product on exp(L - lpx - row max), with an exact log-domain fallback
    wherever that product underflows. Rows are independent, so L may be any block of candidates."""
    n = L.shape[1]
    lpx = log_px.to(device=L.device, dtype=torch.float64)
    counts = counts.to(L.device)
    a = L - lpx  # [m, N] float64
    r = a.amax(1, keepdim=True)
    s = a.sub_(r).clamp_min_(EXP_FLOOR[torch.float64]).exp_() @ counts.T  # [m, B]; the floor: see _logsumexp_
    out = r + torch.log(s)
    bad = s < 1e-250
    if bad.any():
        rows, cols = bad.nonzero(as_tuple=True)
        out[rows, cols] = torch.logsumexp(L[rows].to(torch.float64) - lpx + torch.log(counts[cols]), 1)
    return out - math.log(n)


def bootstrap_intervals(lc: torch.Tensor, counts: torch.Tensor, log_px: torch.Tensor, level: float = 0.95,
                        paired: bool = True) -> dict[str, tuple[float, float]]:
    """Percentile intervals of glossy_max, glossy_std, lower_bound and nll from the resampled log c
    values lc [M, B] (`resampled_log_c`) and the counts [B, N]. paired: the candidates are the data points
    themselves (M = N), so a resample brings each point's candidate as many times as the point;
    otherwise the candidates are fixed (drawn from elsewhere) and only the data points are resampled."""
    n = counts.shape[1]
    counts = counts.to(lc.device)
    if paired:
        w = counts.T  # [N, B]
        gmax = torch.where(w > 0, lc, torch.full_like(lc, -math.inf)).max(0).values
        mean = (w * lc).sum(0) / n
        std = torch.sqrt((w * (lc - mean) ** 2).sum(0) / (n - 1))
    else:
        gmax = lc.max(0).values
        std = lc.std(0, unbiased=True) if lc.shape[0] > 1 else torch.full_like(gmax, math.nan)
    nll_b = resampled_nll(counts, log_px)
    stats = {"glossy_max": gmax, "glossy_std": std, "lower_bound": nll_b - gmax.clamp(min=0), "nll": nll_b}
    return {k: percentile_interval(v, level) for k, v in stats.items()}


def resampled_nll(counts: torch.Tensor, log_px: torch.Tensor) -> torch.Tensor:
    """[B] the NLL of each resample with counts [B, N]."""
    lpx = log_px.to(device=counts.device, dtype=torch.float64)
    return -(counts * lpx).sum(1) / counts.shape[1]


def percentile_interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of the resampled values."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64, device=values.device)
    return tuple(torch.quantile(values.to(torch.float64), q).tolist())


def bootstrap(L: torch.Tensor, log_px: torch.Tensor, n_boot: int, seed: int = 0, level: float = 0.95,
              block_rows: int | None = None, paired: bool = True) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for glossy_max, glossy_std, lower_bound and nll, resampling
    data points. paired (the in-sample candidates, a square L): a point brings its candidate and its
    column; otherwise (candidates from outside the data, L [M, N]) only the columns are resampled.
    Each resample's log c values are weighted log-sum-exps with the resample counts, computed for all
    resamples at once (`resampled_log_c`)."""
    if paired and L.shape[0] != L.shape[1]:
        raise ValueError("a paired bootstrap needs one candidate per data point (a square L)")
    counts = bootstrap_counts(L.shape[1], n_boot, seed).to(L.device)
    step = row_block(L, block_rows)
    lc = torch.cat([resampled_log_c(L[i : i + step], log_px, counts) for i in range(0, L.shape[0], step)])
    return bootstrap_intervals(lc, counts, log_px, level, paired)
