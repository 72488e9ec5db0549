"""The interval stage. Every statistic of an evaluation is recomputed on replicates of the data points, all
replicates at once (one weighted log-sum-exp per candidate and replicate), and an interval is made from the
replicates by the method that `results/coverage.md` measured valid for that statistic:

- means over the data points (nll, nll_ba_heldout): the normal interval, mean +- z sd / sqrt(N);
- the glossy statistics and lower bounds: the delete-a-group jackknife (`group_weights`, G groups of the
  points left out in turn) gives a standard error, and the interval is estimate +- t_{G-1} se. The target is
  the statistic's expectation over test sets of the evaluated size N (log c and its max depend on N), so the
  interval is centred at the estimate and always contains it.

The percentile bootstrap (`bootstrap_counts`, `bootstrap`) is kept for the coverage study, which measured it
invalid here: a resample duplicates and drops points, and log c(z_i) is dominated by the few points nearest
z_i, so its replicates are centred above the estimate (scripts/coverage_study.py)."""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import torch

from .storage import EXP_FLOOR, row_block


def bootstrap_counts(n: int, n_boot: int, seed: int = 0) -> torch.Tensor:
    """[B, N] float64 resample counts of N data points, B resamples (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=gen)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    return counts


def group_weights(n: int, groups: int, seed: int = 0) -> torch.Tensor:
    """[G, N] float64 weights of the delete-a-group jackknife: the N points are split at random (seeded)
    into G groups of sizes differing by at most one; replicate g keeps every point outside group g
    (weight 1) and leaves group g out (weight 0)."""
    if not 2 <= groups <= n:
        raise ValueError(f"a delete-a-group jackknife needs 2 <= groups <= N (groups={groups}, N={n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    group = torch.empty(n, dtype=torch.long)
    group[perm] = torch.arange(n) % groups
    return (group.unsqueeze(0) != torch.arange(groups).unsqueeze(1)).to(torch.float64)


def resampled_log_c(L: torch.Tensor, log_px: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[M, R] log c_r(z_i) = log (sum_j counts[r, j] l(x_j | z_i) / tau(x_j)) / sum_j counts[r, j] for a block
    of rows of L [M, N] and replicate weights counts [R, N] (bootstrap counts or jackknife 0/1 weights):
    one float64 matrix product on exp(L - lpx - row max), with an exact log-domain fallback wherever that
    product underflows. Rows are independent, so L may be any block of candidates."""
    lpx = log_px.to(device=L.device, dtype=torch.float64)
    counts = counts.to(L.device)
    a = L - lpx  # [m, N] float64
    r = a.amax(1, keepdim=True)
    return _replicates_from_exp(a.sub_(r).clamp_min_(EXP_FLOOR[torch.float64]).exp_(), r, L, lpx, counts)


def _replicates_from_exp(E: torch.Tensor, r: torch.Tensor, L: torch.Tensor, lpx: torch.Tensor,
                         counts: torch.Tensor) -> torch.Tensor:
    """`resampled_log_c` from E = exp(L - lpx - r) (floored as there) and the row maxima r [m, 1]."""
    s = E @ counts.T  # [m, R]; the floor: see bounds._logsumexp_
    out = r + torch.log(s)
    bad = s < 1e-250
    if bad.any():
        rows, cols = bad.nonzero(as_tuple=True)
        out[rows, cols] = torch.logsumexp(L[rows].to(torch.float64) - lpx + torch.log(counts[cols]), 1)
    return out - torch.log(counts.sum(1))


def log_c_and_replicates(L: torch.Tensor, log_px: torch.Tensor, counts: torch.Tensor,
                         block_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log c [M], the replicates' log c [M, R]) of L [M, N]: `bounds.log_c` and `resampled_log_c` from one
    float64 exp(L - lpx - row max) per cache-sized row block instead of one each. Both exponentiate that matrix
    the same way (the same shift, floor and row blocks as `bounds.log_c`), so each number is the one the
    function apart gives; a row whose entries are all -inf gets -inf for both (its terms are all floored,
    so the replicates take the exact fallback)."""
    n = L.shape[1]
    lpx = log_px.to(device=L.device, dtype=torch.float64)
    counts = counts.to(L.device)
    step = row_block(L, block_rows)
    buf = torch.empty(min(step, L.shape[0]), n, dtype=torch.float64, device=L.device)
    lc, lcb = [], []
    for i in range(0, L.shape[0], step):
        Lb = L[i : i + step]
        a = torch.sub(Lb, lpx, out=buf[: len(Lb)])
        r = a.amax(1, keepdim=True)
        finite = torch.isfinite(r)
        E = a.sub_(torch.where(finite, r, 0.0)).clamp_min_(EXP_FLOOR[torch.float64]).exp_()
        lc.append(torch.where(finite, r + torch.log(E.sum(1, keepdim=True)), r).squeeze(1))
        lcb.append(_replicates_from_exp(E, r, Lb, lpx, counts))
    return torch.cat(lc) - math.log(n), torch.cat(lcb)


def resampled_nll(counts: torch.Tensor, log_px: torch.Tensor) -> torch.Tensor:
    """[R] the NLL of each replicate with weights counts [R, N]."""
    lpx = log_px.to(device=counts.device, dtype=torch.float64)
    return -(counts * lpx).sum(1) / counts.sum(1)


def replicate_stats(lc: torch.Tensor, counts: torch.Tensor, log_px: torch.Tensor,
                    paired: bool = True) -> dict[str, torch.Tensor]:
    """[R] glossy_max, glossy_std, lower_bound and nll of each replicate, from its log c values lc [M, R]
    (`resampled_log_c`) and the weights counts [R, N]. paired: the candidates are the data points
    themselves (M = N), so a replicate brings each point's candidate with the point's weight; otherwise the
    candidates are fixed (drawn from elsewhere) and only the data points are reweighted."""
    counts = counts.to(lc.device)
    if paired:
        w = counts.T  # [N, R]
        tot = w.sum(0)
        gmax = torch.where(w > 0, lc, torch.full_like(lc, -math.inf)).max(0).values
        mean = (w * lc).sum(0) / tot
        std = torch.sqrt((w * (lc - mean) ** 2).sum(0) / (tot - 1))
    else:
        gmax = lc.max(0).values
        std = lc.std(0, unbiased=True) if lc.shape[0] > 1 else torch.full_like(gmax, math.nan)
    nll_r = resampled_nll(counts, log_px)
    return {"glossy_max": gmax, "glossy_std": std, "lower_bound": nll_r - gmax.clamp(min=0), "nll": nll_r}


def replicates(L: torch.Tensor, log_px: torch.Tensor, counts: torch.Tensor, paired: bool = True,
               block_rows: int | None = None) -> dict[str, torch.Tensor]:
    """`replicate_stats` of the whole matrix L [M, N], in row blocks."""
    if paired and L.shape[0] != L.shape[1]:
        raise ValueError("paired replicates need one candidate per data point (a square L)")
    counts = counts.to(L.device)
    step = row_block(L, block_rows)
    lc = torch.cat([resampled_log_c(L[i : i + step], log_px, counts) for i in range(0, L.shape[0], step)])
    return replicate_stats(lc, counts, log_px, paired)


# ------------------------------------------------------------------------------------------------ intervals

def percentile_interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of the resampled values."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64, device=values.device)
    return tuple(torch.quantile(values.to(torch.float64), q).tolist())


def _t_cdf_upper_half(t: float, df: int, steps: int = 4000) -> float:
    """P(0 <= T <= t) for Student's t with df degrees of freedom: Simpson's rule on the density."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    h = t / steps
    f = [c * (1 + (k * h) ** 2 / df) ** (-(df + 1) / 2) for k in range(steps + 1)]
    return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 1/2) of Student's t with df >= 1 degrees of freedom, to about 1e-9."""
    if not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs 1/2 < p < 1 (p={p})")
    lo, hi = 0.0, 1.0
    while _t_cdf_upper_half(hi, df) < p - 0.5:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_upper_half(mid, df) < p - 0.5 else (lo, mid)
    return (lo + hi) / 2


def jackknife_se(reps: torch.Tensor) -> float:
    """The delete-a-group jackknife standard error from the G group-deleted values."""
    g = reps.numel()
    r = reps.to(torch.float64)
    return math.sqrt((g - 1) / g * ((r - r.mean()) ** 2).sum().item())


def jackknife_interval(estimate: float, reps: torch.Tensor, level: float) -> tuple[float, float]:
    """estimate +- t_{G-1} se: the delete-a-group jackknife interval for the statistic's expectation at N."""
    half = t_quantile((1 + level) / 2, reps.numel() - 1) * jackknife_se(reps)
    return estimate - half, estimate + half


def normal_interval(values: torch.Tensor, level: float) -> tuple[float, float]:
    """mean +- z sd / sqrt(N) of per-point values (the NLL's -log p^(x_j), the held-out score's)."""
    v = values.to(torch.float64)
    half = NormalDist().inv_cdf((1 + level) / 2) * v.std().item() / math.sqrt(v.numel())
    m = v.mean().item()
    return m - half, m + half


def bootstrap(L: torch.Tensor, log_px: torch.Tensor, n_boot: int, seed: int = 0, level: float = 0.95,
              block_rows: int | None = None, paired: bool = True) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for glossy_max, glossy_std, lower_bound and nll, resampling data
    points (paired: a point brings its candidate; otherwise only the columns are resampled). Not what
    glossy reports: scripts/coverage_study.py compares it with the jackknife."""
    reps = replicates(L, log_px, bootstrap_counts(L.shape[1], n_boot, seed), paired, block_rows)
    return {k: percentile_interval(v, level) for k, v in reps.items()}


def jackknife(L: torch.Tensor, log_px: torch.Tensor, groups: int, seed: int = 0, level: float = 0.95,
              block_rows: int | None = None, paired: bool = True,
              estimates: dict[str, float] | None = None) -> dict[str, tuple[float, float]]:
    """Delete-a-group jackknife intervals for glossy_max, glossy_std and lower_bound (the normal interval
    for nll), centred at the estimates on all of L (computed here unless given)."""
    weights = group_weights(L.shape[1], groups, seed)
    reps = replicates(L, log_px, weights, paired, block_rows)
    if estimates is None:
        full = replicates(L, log_px, torch.ones(1, L.shape[1], dtype=torch.float64), paired, block_rows)
        estimates = {k: v.item() for k, v in full.items()}
    out = {k: jackknife_interval(estimates[k], reps[k], level) for k in ("glossy_max", "glossy_std", "lower_bound")}
    out["nll"] = normal_interval(-log_px, level)
    return out
