"""The bounds stage: each source's glossy statistics, the in-sample Blahut-Arimoto sandwich with the paired
jackknife intervals, and the held-out prior fitted on the validation images."""

from __future__ import annotations

import logging
import time

import torch

from . import bounds, intervals
from .candidates import fail_if_not_finite, likelihood_matrix
from .importance import importance_sampling
from .journal import ISJournal
from .progress import progress_bar

log = logging.getLogger("glossy")


def source_stats(lc: torch.Tensor, nll: float, suffix: str) -> dict:
    st = bounds.glossy_stats(lc)
    return {f"glossy_max{suffix}": st["glossy_max"], f"glossy_std{suffix}": st["glossy_std"],
            f"glossy_var{suffix}": st["glossy_std"] ** 2, f"glossy_mean{suffix}": lc.mean().item(),
            f"glossy_argmax{suffix}": st["argmax"], f"lower_bound{suffix}": bounds.lower_bound(nll, lc)}


def in_sample(model, x, z, lpx, nll, plan, device, show_progress, *, paired_ok: bool, weights: torch.Tensor | None,
              level: float, ba_iters: int, ba_tol: float, ba_bytes: int, timing: dict) -> tuple[torch.Tensor, dict]:
    """The test source: candidates at the evaluated images' own codes. Its whole matrix is kept for the
    in-sample Blahut-Arimoto sandwich and the paired jackknife (weights: `intervals.group_weights`, or None),
    built inside the sandwich's augmented matrix (one more row: the model's prior) so that L is never
    copied. Returns (log c [M], fields); the seconds of the matrix, the sandwich and the intervals go into
    `timing`."""
    t1 = time.perf_counter()
    aug = torch.empty(len(z) + 1, len(x), dtype=torch.float32, device=device)
    L = aug[:-1]
    with progress_bar(show_progress, len(z), "glossy matrix (test candidates)", "candidates") as bar:
        likelihood_matrix(model, x, z, plan, device, bar, out=L)
    aug[-1] = lpx.to(torch.float32)
    timing["glossy_matrix"] = time.perf_counter() - t1
    fail_if_not_finite(L, "the glossy matrix log l(x_j | z_i)", ("candidate", "point"), allow_minus_inf=True)
    lc = bounds.log_c(L, lpx)
    st = source_stats(lc, nll, "_test")
    fields = {**st, **{k.removesuffix("_test"): v for k, v in st.items()
                       if k.startswith(("glossy_max", "glossy_std", "lower_bound"))},
              "n_candidates": len(z), "n_candidates_test": len(z)}
    t1 = time.perf_counter()
    fields.update(bounds.sandwich(L, lpx, max_iter=ba_iters, tol=ba_tol, max_bytes=ba_bytes, augmented=aug,
                                  level=level if weights is not None else None))
    timing["sandwich"] = time.perf_counter() - t1
    if weights is not None and paired_ok:
        t1 = time.perf_counter()
        reps = intervals.replicates(L, lpx, weights, paired=True)
        for k in ("glossy_max", "glossy_std", "lower_bound"):
            lo, hi = intervals.jackknife_interval(fields[k], reps[k], level)
            fields[f"{k}_ci"] = fields[f"{k}_test_ci"] = [lo, hi]
        timing["intervals"] = time.perf_counter() - t1
    elif weights is not None:
        log.info("intervals of the test candidates skipped: the jackknife leaves out points with their candidates "
                 "(needs M = N)")
    return lc.cpu(), fields


def heldout_fit(model, fit, za, plan, device, show_progress, is_samples: int, *, ba_iters: int, ba_tol: float,
                 ba_bytes: int, timing: dict, journal: ISJournal | None = None) -> tuple[torch.Tensor, dict]:
    """Blahut-Arimoto weights on the atoms za plus the model's own prior, fitted on the images `fit` (their
    log p^(x) importance-sampled here). Returns the log weights [M + 1] (the prior's last) and the fields;
    the seconds of its importance sampling, matrix and Blahut-Arimoto go into `timing`."""
    t1 = time.perf_counter()
    with progress_bar(show_progress, len(fit), "importance sampling (held-out fit)", "points") as bar:
        lpx_fit, _ = importance_sampling(model, fit, is_samples, plan, device, bar, journal=journal,
                                         stage="held-out fit")
    fail_if_not_finite(lpx_fit, "the importance-sampled log p(x_j) of the validation images", ("point",))
    timing["heldout_importance_sampling"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    aug = torch.empty(len(za) + 1, len(fit), dtype=torch.float32, device=device)  # the atoms, then the prior
    with progress_bar(show_progress, len(za), "held-out fit matrix", "candidates") as bar:
        likelihood_matrix(model, fit, za, plan, device, bar, out=aug[:-1])
    aug[-1] = lpx_fit.to(device)
    fail_if_not_finite(aug, "the held-out glossy matrix", ("candidate", "point"), allow_minus_inf=True)
    timing["heldout_matrix"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    ho = bounds.prior_fit_augmented(aug, max_iter=ba_iters, tol=ba_tol, max_bytes=ba_bytes)
    timing["heldout_ba"] = time.perf_counter() - t1
    return ho["log_w"], {"ba_heldout_prior_weight": ho["prior_weight"], "ba_heldout_fit_nll": ho["fit_nll"],
                         "nll_heldout_fit_model": bounds.nll(lpx_fit), "ba_heldout_gap": ho["fit_gap"],
                         "ba_heldout_iterations": ho["iterations"], "ba_heldout_converged": ho["converged"],
                         "n_heldout_fit": len(fit), "n_heldout_atoms": len(za)}
