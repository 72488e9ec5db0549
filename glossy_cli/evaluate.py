"""Evaluation of a trained model: importance-sampled NLL, candidates, the glossy matrix, log c(z),
the glossy statistics, the bounds, the Blahut-Arimoto sandwich and bootstrap intervals."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from . import bounds
from .errors import GlossyError

log = logging.getLogger("glossy")


class LogProgress:
    """Progress for a log file rather than a terminal (a cluster job's output): one log line at each
    tenth of the work, once the work has run for `quiet_s` seconds (short evaluations stay silent), in
    place of tqdm's carriage-return bar that would fill the log with one long line."""

    def __init__(self, total: int, desc: str, unit: str, quiet_s: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.quiet_s = total, desc, unit, quiet_s
        self.done, self.mark, self.t0 = 0, 1, time.perf_counter()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, k: int) -> None:
        self.done += k
        tenth = 10 * self.done // max(self.total, 1)
        if tenth < self.mark:
            return
        self.mark = tenth + 1
        elapsed = time.perf_counter() - self.t0
        if elapsed >= self.quiet_s and self.done < self.total:
            left = elapsed * (self.total - self.done) / self.done
            log.info("%s: %d/%d %s (%d%%), %s elapsed, about %s left", self.desc, self.done, self.total,
                     self.unit, 100 * self.done // self.total, _hms(elapsed), _hms(left))


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _progress(show: bool | str, total: int, desc: str, unit: str):
    """show: True, a tqdm bar; "log", LogProgress; False, nothing."""
    from tqdm.auto import tqdm

    if show == "log":
        return LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False)


@dataclass(frozen=True)
class Plan:
    points: int  # data points per importance-sampling chunk
    samples: int  # importance samples per chunk
    matrix_rows: int  # candidates per block of the glossy matrix
    matrix_cols: int  # data points per block of the glossy matrix

    def describe(self) -> str:
        return (f"importance sampling in chunks of {self.points} point{'s' * (self.points != 1)} x "
                f"{self.samples} samples; "
                f"glossy matrix in blocks of {self.matrix_rows} x {self.matrix_cols}")


def plan_chunks(n_points: int, n_samples: int, bytes_per_item: int, budget_bytes: int) -> tuple[int, int]:
    """(points, samples) per chunk with points * samples * bytes_per_item <= budget_bytes, as many
    samples per point as fit (so that the encoder runs once per point when possible)."""
    items = int(budget_bytes // max(1, bytes_per_item))
    if items < 1:
        raise GlossyError(f"memory budget of {budget_bytes / 2**20:.3g} MiB cannot hold even one importance "
                          f"sample ({bytes_per_item / 2**20:.2f} MiB); raise eval.memory_budget_gb")
    samples = min(n_samples, items)
    points = max(1, min(n_points, items // samples))
    return points, samples


def make_plan(model, n_points: int, n_candidates: int, n_samples: int, budget_bytes: int) -> Plan:
    # importance sampling runs one data point per call (see `importance_sampling`), so that its
    # random draws, hence the numbers, do not depend on the budget; only its samples are chunked
    _, samples = plan_chunks(1, n_samples, model.eval_bytes_per_sample(), budget_bytes)
    points = 1
    d = math.prod(model.input_shape)
    if model.autoregressive:
        pairs = max(1, budget_bytes // model.matrix_bytes_per_pair())
        cols = max(1, min(n_points, pairs))
        rows = max(1, min(n_candidates, pairs // cols))
    else:
        # per candidate row: decoder output [D], its share of the [rows, cols] block, and for the
        # logistic the per-row table [D * 256] plus the gathered [cols_gather, D] temporaries
        per_row = 4 * (8 * d + n_points + (2 * 256 * d + 64 * d if model.input_type != "binary" else 0))
        rows = max(1, min(n_candidates, budget_bytes // per_row))
        cols = n_points
    return Plan(points, samples, rows, cols)


_MASK64 = 2**64 - 1


def _point_seed(base: int, j: int) -> int:
    """A seed for data point j: splitmix64 of (base, j), so that neighbouring points get unrelated streams."""
    z = (base + (j + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1  # 63 bits


# The decoder work of importance sampling runs in blocks of about this many bytes of activations
# (model.eval_bytes_per_sample() per sample): small enough that the elementwise passes (gates, the
# likelihood's log-sum terms) stay in cache, large enough for efficient matrix products. On the
# 2-core EPYC this was tuned on, VAE blocks of 256-1024 samples run at ~70% of one core's matmul
# peak, 5000-sample batches at ~45%.
IS_BLOCK_BYTES = 12 * 2**20


def is_blocks(n_samples: int, chunk_samples: int, bytes_per_sample: int,
              block_bytes: int = IS_BLOCK_BYTES) -> tuple[int, int]:
    """(points per group, samples per decoder block) for the fast importance sampling: a decoder block
    holds group * samples rows with group * samples <= min(block_bytes / bytes_per_sample, chunk_samples)
    (at least one row), so it never needs more memory than one chunk of the plan. Several points are
    grouped only when all their samples fit one chunk (small S), so each point's draws stay one stream."""
    rows = max(1, min(int(block_bytes // max(1, bytes_per_sample)), chunk_samples))
    group = max(1, rows // n_samples) if n_samples <= chunk_samples else 1
    return group, max(1, rows // group)


def _has_default_weights(model) -> bool:
    from glossy_models.base import LatentVariableModel

    return getattr(type(model), "log_importance_weights", None) is LatentVariableModel.log_importance_weights


@torch.no_grad()
def importance_sampling(model, x: torch.Tensor, n_samples: int, plan: Plan, device: torch.device,
                        progress=None, fast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """log p^(x_j) = logsumexp_s log w_s - log S and the mean of log w_s (an ELBO estimate), [N] each,
    float64. The random number generator is seeded per data point from (one draw of the current RNG,
    j): the draws of point j, hence every number, are the same whatever the memory budget and the
    order of the points, as long as the S samples of one point fit in it (S x `eval_bytes_per_sample`:
    ~140 MiB for S = 5000 on MNIST). Below that the samples of a point are split into chunks of
    `plan.samples`, whose draws differ (the estimate stays unbiased); the log-sum-exp over sample
    chunks is accumulated, so memory stays within the plan.

    `fast` (the default) draws exactly the same samples, then runs the likelihood and prior on them in
    cache-sized blocks (`is_blocks`), grouping the samples of several points into one block when S is
    small; `fast=False` is the plain path, one `log_importance_weights` call per chunk. Both give the
    same numbers up to floating-point noise (tests/test_bench.py)."""
    n = x.shape[0]
    log_px = torch.empty(n, dtype=torch.float64)
    elbo = torch.empty(n, dtype=torch.float64)
    base = int(torch.randint(0, 2**62, (1,)).item())
    after = torch.random.get_rng_state()
    chunks = [(s0, min(plan.samples, n_samples - s0)) for s0 in range(0, n_samples, plan.samples)]
    if fast and _has_default_weights(model):
        group, block = is_blocks(n_samples, plan.samples, model.eval_bytes_per_sample())
    else:
        fast, group, block = False, 1, plan.samples
    try:
        for g0 in range(0, n, group):
            xg = x[g0 : g0 + group].to(device, non_blocking=True)
            gp = xg.shape[0]
            acc = torch.full((gp,), -math.inf, dtype=torch.float64, device=device)
            total = torch.zeros(gp, dtype=torch.float64, device=device)
            for c, (_, s) in enumerate(chunks):
                if not fast:
                    if c == 0:
                        torch.manual_seed(_point_seed(base, g0))
                    lw = model.log_importance_weights(xg, s)  # [s, 1]
                else:
                    zs, lqs = [], []
                    for i in range(gp):  # the same draws as the plain path, point by point
                        if c == 0:
                            torch.manual_seed(_point_seed(base, g0 + i))
                        z, lq = model.sample_posterior(xg[i : i + 1], s)
                        zs.append(z)
                        lqs.append(lq)
                    z, lq = (zs[0], lqs[0]) if gp == 1 else (torch.cat(zs, 1), torch.cat(lqs, 1))
                    lw = torch.cat([model.log_likelihood(xg, z[b : b + block]) + model.log_prior(z[b : b + block])
                                    - lq[b : b + block] for b in range(0, s, block)])  # [s, gp]
                lw = lw.to(torch.float64)
                acc = torch.logaddexp(acc, torch.logsumexp(lw, 0))
                total += lw.sum(0)
            log_px[g0 : g0 + gp] = (acc - math.log(n_samples)).cpu()
            elbo[g0 : g0 + gp] = (total / n_samples).cpu()
            if progress is not None:
                progress.update(gp)
    finally:
        torch.random.set_rng_state(after)
    return log_px, elbo


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.posterior_mean(x[i : i + batch].to(device)) for i in range(0, len(x), batch)])


@torch.no_grad()
def likelihood_matrix(model, x: torch.Tensor, z: torch.Tensor, plan: Plan, device: torch.device,
                      progress=None) -> torch.Tensor:
    """L[i, j] = log l(x_j | z_i), [M, N] float32 on `device`, computed block by block."""
    m, n = z.shape[0], x.shape[0]
    xd = x.to(device)
    if m <= plan.matrix_rows and n <= plan.matrix_cols:  # one block: no copy into a second [M, N] matrix
        L = model.log_likelihood_matrix(xd, z.to(device)).to(torch.float32)
        if progress is not None:
            progress.update(m)
        return L
    out = torch.empty(m, n, dtype=torch.float32, device=device)
    for i in range(0, m, plan.matrix_rows):
        zb = z[i : i + plan.matrix_rows].to(device)
        for j in range(0, n, plan.matrix_cols):
            out[i : i + len(zb), j : j + plan.matrix_cols] = model.log_likelihood_matrix(
                xd[j : j + plan.matrix_cols], zb)
        if progress is not None:
            progress.update(len(zb))
    return out


def _plan_within_budget(model, n: int, m: int, is_samples: int, memory_budget_gb: float) -> Plan:
    budget = int(memory_budget_gb * 2**30)
    if 4 * m * n > budget:
        raise GlossyError(f"the {m} x {n} glossy matrix needs {4 * m * n / 2**30:.3g} GiB, over the memory "
                          f"budget of {memory_budget_gb} GiB; raise eval.memory_budget_gb or cap "
                          f"eval.max_candidates / eval.max_points")
    per_sample = model.eval_bytes_per_sample()
    if budget - 4 * m * n < per_sample:
        raise GlossyError(f"eval.memory_budget_gb={memory_budget_gb} cannot hold the evaluation: the {m} x {n} "
                          f"glossy matrix takes {4 * m * n / 2**20:.3g} MiB of it and one importance sample needs "
                          f"{per_sample / 2**20:.3g} MiB more; raise eval.memory_budget_gb")
    return make_plan(model, n, m, is_samples, budget - 4 * m * n)


def check_budget(model, n_total: int, *, is_samples: int, max_points=None, max_candidates=None,
                 autoregressive_max_candidates=None, memory_budget_gb: float = 4.0, **_: object) -> Plan:
    """The plan `evaluate` will use on `n_total` points with these settings, or the GlossyError it would
    raise when the memory budget cannot hold it. Cheap: training calls it before its first epoch, so that
    a budget that cannot fit fails at once rather than after hours of training."""
    n = n_total if max_points is None else min(n_total, max_points)
    if model.autoregressive and autoregressive_max_candidates is not None:
        max_candidates = min(max_candidates or n, autoregressive_max_candidates)
    m = n if max_candidates is None else min(n, max_candidates)
    return _plan_within_budget(model, n, m, is_samples, memory_budget_gb)


def _subset(n: int, cap: int | None, seed: int) -> torch.Tensor | None:
    if cap is None or cap >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def _fail_if_not_finite(values: torch.Tensor, what: str, index_names: tuple[str, ...],
                        allow_minus_inf: bool = False) -> None:
    """Stop with a clear message when an intermediate quantity holds NaN (or inf), before anything is written."""
    bad = torch.isnan(values) | (values == math.inf)
    if not allow_minus_inf:
        bad |= values == -math.inf
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0]]
        where = ", ".join(f"{name} {i}" for name, i in zip(index_names, first))
        raise GlossyError(f"evaluation failed: {what} is NaN or infinite for {int(bad.sum())} of {values.numel()} "
                          f"entries (first at {where}: {values[tuple(first)].item()}); the model produces "
                          "non-finite log-likelihoods (check the checkpoint's training history); nothing was written")


def _finite_or_fail(result: dict, keys) -> None:
    bad = [k for k in keys if isinstance(result.get(k), float) and not math.isfinite(result[k])]
    if bad:
        raise GlossyError("evaluation produced non-finite values for " + ", ".join(
            f"{k} = {result[k]}" for k in bad) + "; the model's log-likelihoods overflowed or are NaN "
            "(check the checkpoint's training history); nothing was written")


def evaluate(model, x: torch.Tensor, *, true_model=None, is_samples: int = 5000, max_points=None,
             max_candidates=None, autoregressive_max_candidates=None, subset_seed: int = 0, seed: int = 1234,
             memory_budget_gb: float = 4.0,
             bootstrap: int = 100, bootstrap_level: float = 0.95, ba_iters: int = 500, ba_tol: float = 1e-4,
             device: torch.device | str = "cpu", show_progress: bool | str = True, **_: object) -> dict:
    """Every number of result.json for model on data x [N, C, H, W]. Pure in its inputs: the same
    model, data and settings give the same numbers; `memory_budget_gb` changes only the chunking, never
    the numbers (up to floating-point noise of blocked matrix products). show_progress: True, tqdm bars;
    "log", a log line at each tenth of a long stage; False, nothing."""

    device = torch.device(device)
    t0 = time.perf_counter()
    sub = _subset(len(x), max_points, subset_seed)
    if sub is not None:
        x = x[sub]
    n = len(x)
    if model.autoregressive and autoregressive_max_candidates is not None:
        max_candidates = min(max_candidates or n, autoregressive_max_candidates)
    cand = _subset(n, max_candidates, subset_seed + 1)
    m = n if cand is None else len(cand)
    plan = _plan_within_budget(model, n, m, is_samples, memory_budget_gb)
    log.info("evaluating N=%d points, M=%d candidates, S=%d samples on %s; %s", n, m, is_samples, device,
             plan.describe())
    macs = model.decoder_macs()
    log.info("cost: importance sampling %d decoder passes (N x S), glossy matrix %d %s; about %.3g GFLOP",
             n * is_samples, m * n if model.autoregressive else m,
             "decoder passes (M x N, autoregressive)" if model.autoregressive
             else "decoder passes (M) + an M x N product",
             2e-9 * macs * (n * is_samples + (m * n if model.autoregressive else m)))
    gen_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    torch.manual_seed(seed)
    try:
        with model.frozen():
            with _progress(show_progress, n, "importance sampling", "points") as bar:
                log_px, elbo = importance_sampling(model, x, is_samples, plan, device, bar)
            t_is = time.perf_counter() - t0
            z = posterior_means(model, x if cand is None else x[cand], device)
            with _progress(show_progress, m, "glossy matrix", "candidates") as bar:
                L = likelihood_matrix(model, x, z, plan, device, bar)
    finally:
        torch.random.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    t_mat = time.perf_counter() - t0 - t_is
    _fail_if_not_finite(log_px, "the importance-sampled log p(x_j)", ("point",))
    _fail_if_not_finite(L, "the glossy matrix log l(x_j | z_i)", ("candidate", "point"), allow_minus_inf=True)
    lpx = log_px.to(L.device)
    lc = bounds.log_c(L, lpx)
    stats = bounds.glossy_stats(lc)
    nll = bounds.nll(log_px)
    result = {
        "n_points": n, "n_candidates": m, "is_samples": is_samples,
        "nll": nll, "elbo": elbo.mean().item(),
        "glossy_max": stats["glossy_max"], "glossy_std": stats["glossy_std"],
        "lower_bound": bounds.lower_bound(nll, lc),
    }
    result.update(bounds.sandwich(L, lpx, max_iter=ba_iters, tol=ba_tol))
    if bootstrap > 0:
        if cand is None:
            ci = bounds.bootstrap(L, lpx, bootstrap, seed=seed, level=bootstrap_level)
            for k, (lo, hi) in ci.items():
                result[f"{k}_ci"] = [lo, hi]
            result["bootstrap"] = bootstrap
            result["bootstrap_level"] = bootstrap_level
        else:
            log.info("bootstrap skipped: it resamples points with their candidates (needs M = N)")
    if true_model is not None:
        true_lpx = true_model.log_marginal(x)
        exact_lc = bounds.log_c(true_model.log_likelihood_matrix(x), log_px)
        result["true_nll"] = bounds.nll(true_lpx)
        result["exact_lower_bound"] = nll - exact_lc.max().item()
        result["exact_glossy_max"] = exact_lc.max().item()
    result["timing_s"] = {"importance_sampling": t_is, "glossy_matrix": t_mat,
                          "total": time.perf_counter() - t0}
    result["plan"] = plan.__dict__
    if sub is not None:
        result["subset_seed"] = subset_seed
    _finite_or_fail(result, ["nll", "elbo", "glossy_max", "glossy_std", "lower_bound", "nll_ba"])
    return result
