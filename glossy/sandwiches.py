"""The sandwiches: the in-sample Blahut-Arimoto prior on the test candidates (Theorem 2's problem, with the paired
jackknife intervals of the test source's statistics) and the held-out prior on the training atoms, fitted on the
validation images and scored on the evaluated ones. Each stage takes the evaluation's context
(glossy/context.py) and adds its fields to its result."""

from __future__ import annotations

import logging

import torch

import glossy.bounds as bounds
import glossy.intervals as intervals

from .candidates import fail_if_not_finite, likelihood_matrix, stream_source, subset
from .context import EvalContext
from .importance import importance_sampling
from .progress import progress_bar
from .search import search_sup, searched_stats
from .settings import heldout_samples

log = logging.getLogger("glossy")


# the candidate sources other than the test images' own codes: NLL - max log c over one of them bounds only the
# priors supported on its codes, and is named so (bound_<source>_atoms), never a lower bound over every prior
ATOM_SOURCES = ("train", "valid", "prior")
# the names older results used for them (glossy.sandwiches.upgrade reads those files)
RENAMED = {f"lower_bound_{s}{ci}": f"bound_{s}_atoms{ci}" for s in ATOM_SOURCES for ci in ("", "_ci")}


def bound_name(suffix: str) -> str:
    """The name of NLL - max log c over a source's candidates (suffix "", "_test", "_train", ...): lower_bound for
    the test images' own codes (the paper's text: it stands for Theorem 2's bound over every prior, the sup of log c
    taken over candidates), bound_<source>_atoms for another source (a bound over the priors on those codes)."""
    src = suffix.removeprefix("_")
    return f"bound_{src}_atoms" if src in ATOM_SOURCES else f"lower_bound{suffix}"


def upgrade(record: dict) -> dict:
    """A result (or a trajectory's columns) with the names of older results replaced by today's (RENAMED)."""
    return {RENAMED.get(k, k): v for k, v in record.items()}


def source_stats(lc: torch.Tensor, nll: float, suffix: str) -> dict:
    st = bounds.glossy_stats(lc)
    return {f"glossy_max{suffix}": st["glossy_max"], f"glossy_std{suffix}": st["glossy_std"],
            f"glossy_var{suffix}": st["glossy_std"] ** 2, f"glossy_mean{suffix}": lc.mean().item(),
            f"glossy_argmax{suffix}": st["argmax"], bound_name(suffix): bounds.lower_bound(nll, lc)}


def in_sample(ctx: EvalContext) -> None:
    """The test source: candidates at the evaluated images' own codes. Its whole matrix is kept for the
    in-sample Blahut-Arimoto sandwich and the paired jackknife, built inside the sandwich's augmented matrix
    (one more row: the model's prior) so that L is never copied."""
    s, z = ctx.settings, ctx.codes("test")
    k = min(s.sup_search_starts, len(z)) if s.sup_search_steps and not getattr(ctx.model, "autoregressive", False) \
        else 0
    with ctx.timer("glossy_matrix"):  # the candidates, the searched codes (k), then p(z)
        aug = torch.empty(len(z) + k + 1, ctx.n, dtype=torch.float32, device=ctx.device)
        L = aug[: len(z)]
        with progress_bar(ctx.run.show_progress, len(z), "glossy matrix (test candidates)", "candidates") as bar:
            likelihood_matrix(ctx.model, ctx.x, z, ctx.plan, ctx.device, bar, out=L)
        aug[-1] = ctx.lpx.to(torch.float32)
    fail_if_not_finite(L, "the glossy matrix log l(x_j | z_i)", ("candidate", "point"), allow_minus_inf=True)
    lc = bounds.log_c(L, ctx.lpx)
    ctx.log_c["test"] = lc.cpu()
    st = source_stats(lc, ctx.nll, "_test")
    fields = {**st, **{k.removesuffix("_test"): v for k, v in st.items()
                       if k.startswith(("glossy_max", "glossy_std", "lower_bound"))},
              "n_candidates": len(z), "n_candidates_test": len(z)}
    if k:  # the searched codes join the in-sample prior's atoms
        fields.update(sup_search(ctx, z, lc, aug[len(z) : len(z) + k], fields["glossy_max"]))
    with ctx.timer("sandwich"):
        fields.update(bounds.sandwich(L, ctx.lpx, max_iter=s.ba_iters, tol=s.ba_tol, max_bytes=ctx.ba_bytes,
                                      augmented=aug, level=ctx.level if ctx.weights is not None else None))
    if ctx.weights is not None and ctx.picks["test"] is None:
        with ctx.timer("intervals"):
            reps = intervals.replicates(L, ctx.lpx, ctx.weights, paired=True)
            for k in ("glossy_max", "glossy_std", "lower_bound"):
                lo, hi = intervals.jackknife_interval(fields[k], reps[k], ctx.level)
                fields[f"{k}_ci"] = fields[f"{k}_test_ci"] = [lo, hi]
    elif ctx.weights is not None:
        log.info("intervals of the test candidates skipped: the jackknife leaves out points with their candidates "
                 "(needs M = N)")
    ctx.result.update(fields)


def sup_search(ctx: EvalContext, z: torch.Tensor, lc: torch.Tensor, rows: torch.Tensor, candidate_max: float) -> dict:
    """Gradient ascent on log c from the len(rows) best candidates (glossy.search); the found codes' glossy rows
    written into `rows` (those of the sandwich's matrix), their statistics returned."""
    s = ctx.settings
    top = torch.topk(lc, len(rows)).indices.to(z.device)
    with ctx.timer("sup_search"):
        found = search_sup(ctx.model, ctx.x.to(ctx.device), ctx.lpx, z[top].to(ctx.device), s.sup_search_steps)
        likelihood_matrix(ctx.model, ctx.x, found, ctx.plan, ctx.device, out=rows)
    fail_if_not_finite(rows, "the searched codes' glossy rows", ("code", "point"), allow_minus_inf=True)
    return searched_stats(bounds.log_c(rows, ctx.lpx), candidate_max, ctx.nll, s.sup_search_steps, len(rows))


def heldout_fit(ctx: EvalContext) -> None:
    """Blahut-Arimoto weights on the training atoms plus the model's own prior, fitted on the validation images
    (their log p^(x) importance-sampled here, from the held-out seed), into `ctx.log_w`; where the training
    images are not a candidate source, the prior is scored on the evaluated images here (else with that
    source's matrix)."""
    s, valid_x = ctx.settings, ctx.valid_x
    fit = valid_x if ctx.sizes.n_fit == len(valid_x) else valid_x[subset(len(valid_x), ctx.sizes.n_fit,
                                                                          ctx.seeds.subset("fit"))]
    torch.manual_seed(ctx.seeds.heldout)
    za = ctx.codes("train")
    with ctx.timer("heldout_importance_sampling"), progress_bar(
            ctx.run.show_progress, len(fit), "importance sampling (held-out fit)", "points") as bar:
        lpx_fit, _ = importance_sampling(ctx.model, fit, heldout_samples(s.is_samples, s.heldout_is_samples), ctx.plan,
                                         ctx.device, bar,
                                         journal=ctx.run.journal and ctx.run.journal.stage("held-out fit"))
    fail_if_not_finite(lpx_fit, "the importance-sampled log p(x_j) of the validation images", ("point",))
    with ctx.timer("heldout_matrix"):
        aug = torch.empty(len(za) + 1, len(fit), dtype=torch.float32, device=ctx.device)  # the atoms, then p(z)
        with progress_bar(ctx.run.show_progress, len(za), "held-out fit matrix", "candidates") as bar:
            likelihood_matrix(ctx.model, fit, za, ctx.plan, ctx.device, bar, out=aug[:-1])
        aug[-1] = lpx_fit.to(ctx.device)
        fail_if_not_finite(aug, "the held-out glossy matrix", ("candidate", "point"), allow_minus_inf=True)
    with ctx.timer("heldout_ba"):
        ho = bounds.prior_fit_augmented(aug, max_iter=s.ba_iters, tol=s.ba_tol, max_bytes=ctx.ba_bytes)
    ctx.log_w = ho["log_w"]
    ctx.result.update(ba_heldout_prior_weight=ho["prior_weight"], ba_heldout_fit_nll=ho["fit_nll"],
                      nll_heldout_fit_model=bounds.nll(lpx_fit), ba_heldout_gap=ho["fit_gap"],
                      ba_heldout_iterations=ho["iterations"], ba_heldout_converged=ho["converged"],
                      ba_heldout_solver=ho["solver"],
                      n_heldout_fit=len(fit), n_heldout_atoms=len(za))
    if "train" not in ctx.candidates:  # score the atoms on the evaluated images alone
        _, _, mix = stream_source(ctx.model, ctx.x, za, ctx.lpx, ctx.plan, log_w_atoms=ctx.log_w[:-1])
        heldout_score(ctx, mix)


def heldout_score(ctx: EvalContext, mix: torch.Tensor) -> None:
    """nll_ba_heldout, the held-out prior scored on the evaluated points from its atoms' part of the mixture
    marginal (`mix`), and its normal interval (a mean over the points, the prior fixed by the validation
    images)."""
    scores = bounds.heldout_scores(ctx.log_w, ctx.lpx, mix)
    ctx.result["nll_ba_heldout"] = scores.mean().item()
    if ctx.weights is not None:
        ctx.result["nll_ba_heldout_ci"] = list(intervals.normal_interval(scores, ctx.level))
