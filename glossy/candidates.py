"""The candidate stage: the candidates z_i of each source and their glossy matrices L[i, j] = log l(x_j | z_i),
streamed in blocks into log c(z_i), its jackknife replicates and the held-out prior's mixture."""

from __future__ import annotations

import math

import torch

import glossy.bounds as bounds
import glossy.intervals as intervals
from glossy_models.base import LatentVariableModel

from .errors import GlossyError
from .memory import Plan


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.posterior_mean(x[i : i + batch].to(device)) for i in range(0, len(x), batch)])


@torch.no_grad()
def prior_candidates_of(model, m: int, device, batch: int = 1000) -> torch.Tensor:
    """m samples of the model's prior [m, latent_dim], drawn `batch` at a time from the current RNG."""
    if type(model).sample_prior is LatentVariableModel.sample_prior:
        raise GlossyError(f"eval.candidates includes 'prior' but {type(model).__name__} does not implement "
                          "sample_prior(n); drop 'prior' from eval.candidates")
    return torch.cat([model.sample_prior(min(batch, m - i)).to(device) for i in range(0, m, batch)])


@torch.no_grad()
def likelihood_matrix(model, x: torch.Tensor, z: torch.Tensor, plan: Plan, device: torch.device,
                      progress=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """L[i, j] = log l(x_j | z_i), [M, N] float32 on `device`, computed block by block (into `out` if given)."""
    m, n = z.shape[0], x.shape[0]
    xd = x.to(device)
    if out is None and m <= plan.matrix_rows and n <= plan.matrix_cols:  # one block: no copy into a second matrix
        L = model.log_likelihood_matrix(xd, z.to(device)).to(torch.float32)
        if progress is not None:
            progress.update(m)
        return L
    if out is None:
        out = torch.empty(m, n, dtype=torch.float32, device=device)
    for i in range(0, m, plan.matrix_rows):
        zb = z[i : i + plan.matrix_rows].to(device)
        for j in range(0, n, plan.matrix_cols):
            out[i : i + len(zb), j : j + plan.matrix_cols] = model.log_likelihood_matrix(
                xd[j : j + plan.matrix_cols], zb)
        if progress is not None:
            progress.update(len(zb))
    return out


def subset(n: int, cap: int | None, seed: int) -> torch.Tensor | None:
    if cap is None or cap >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def fail_if_not_finite(values: torch.Tensor, what: str, index_names: tuple[str, ...],
                        allow_minus_inf: bool = False) -> None:
    """Stop with a clear message when an intermediate quantity holds NaN (or inf), before anything is written.
    One reduction where all is well (max, and min unless -inf is allowed, propagate NaN); the entries are
    searched only to say which are not."""
    if not values.numel():
        return
    if bool(values.amax() < math.inf) and (allow_minus_inf or bool(values.amin() > -math.inf)):
        return
    bad = torch.isnan(values) | (values == math.inf)
    if not allow_minus_inf:
        bad |= values == -math.inf
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0]]
        where = ", ".join(f"{name} {i}" for name, i in zip(index_names, first))
        raise GlossyError(f"evaluation failed: {what} is NaN or infinite for {int(bad.sum())} of {values.numel()} "
                          f"entries (first at {where}: {values[tuple(first)].item()}); the model produces "
                          "non-finite log-likelihoods (check the checkpoint's training history); nothing was written")


@torch.no_grad()
def stream_source(model, x: torch.Tensor, z: torch.Tensor, log_px: torch.Tensor, plan: Plan, *,
                  counts: torch.Tensor | None = None, log_w_atoms: torch.Tensor | None = None, progress=None):
    """For candidates z [M] on data x [N], without keeping the M x N matrix: log c(z_i) [M]; with replicate
    weights counts [R, N] (jackknife groups left out), the replicates' log c [M, R]; with log weights on the M
    candidates, the atoms' part of the mixture marginal log sum_i w_i l(x_j | z_i) [N]. One block of
    `plan.matrix_rows` candidates at a time, on the device that log_px [N] is on."""
    device = log_px.device
    lpx = log_px.to(dtype=torch.float64)
    lc, lcb = [], []
    mix = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=device)
    for i in range(0, z.shape[0], plan.matrix_rows):
        Lb = likelihood_matrix(model, x, z[i : i + plan.matrix_rows], plan, device)  # [rows, N]
        fail_if_not_finite(Lb, "the glossy matrix log l(x_j | z_i)", ("candidate", "point"), allow_minus_inf=True)
        if counts is not None:  # log c and its replicates from one exp-matrix
            lc_b, lcb_b = intervals.log_c_and_replicates(Lb, lpx, counts)
            lc.append(lc_b)
            lcb.append(lcb_b)
        else:
            lc.append(bounds.log_c(Lb, lpx))
        if log_w_atoms is not None:
            lw = log_w_atoms[i : i + Lb.shape[0]].to(device=device, dtype=torch.float64)
            on = torch.isfinite(lw)  # the atoms of weight 0 add nothing (a best prior has a few hundred others)
            if bool(on.any()):
                mix = torch.logaddexp(mix, bounds.mixture_log_marginal(Lb[on], lw[on]))
        if progress is not None:
            progress.update(Lb.shape[0])
    return torch.cat(lc), (torch.cat(lcb) if counts is not None else None), \
        (mix if log_w_atoms is not None else None)
