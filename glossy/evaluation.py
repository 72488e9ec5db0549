"""The evaluation of a trained model, stage by stage: importance sampling (importance.py), the candidates and
their glossy matrices (candidates.py), the bounds and the sandwiches (bounds_stage.py, on the maths of
bounds.py), the intervals (intervals.py); memory.py plans the chunks, journal.py keeps finished points,
progress.py reports. One typed settings object, `EvalSettings` (settings.py), says what to compute."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import torch

from . import bounds, intervals, storage
from .candidates import fail_if_not_finite, posterior_means, prior_candidates_of, stream_source, subset
from .errors import GlossyError
from .importance import importance_sampling
from .journal import ISJournal
from .memory import plan_within_budget, sizes_for
from .progress import progress_bar
from .sandwiches import heldout_fit, in_sample, source_stats
from .settings import EvalSettings, candidate_list

log = logging.getLogger("glossy")


IN_SAMPLE = EvalSettings(candidates=["test"], heldout=False)  # evaluate()'s settings when none are given


def _finite_or_fail(result: dict, keys) -> None:
    bad = [k for k in keys if isinstance(result.get(k), float) and not math.isfinite(result[k])]
    if bad:
        raise GlossyError("evaluation produced non-finite values for " + ", ".join(
            f"{k} = {result[k]}" for k in bad) + "; the model's log-likelihoods overflowed or are NaN "
            "(check the checkpoint's training history); nothing was written")


def heldout_score(result: dict, log_w, lpx, mix, with_interval: bool, level: float) -> None:
    """nll_ba_heldout, the held-out prior scored on the evaluated points, and its normal interval (a mean over
    the points, the prior fixed by the validation images)."""
    scores = bounds.heldout_scores(log_w, lpx, mix)
    result["nll_ba_heldout"] = scores.mean().item()
    if with_interval:
        result["nll_ba_heldout_ci"] = list(intervals.normal_interval(scores, level))


def evaluate(model, x: torch.Tensor, settings: EvalSettings | None = None, *, train_x: torch.Tensor | None = None,
             valid_x: torch.Tensor | None = None, true_model=None, device: torch.device | str = "cpu",
             show_progress: bool | str = True, keep: dict | None = None, journal: ISJournal | None = None,
             **overrides) -> dict:
    """Every number of result.json for model on data x [N, C, H, W]. Pure in its inputs: the same
    model, data and settings give the same numbers; `memory_budget_gb` changes only the chunking, never
    the numbers (up to floating-point noise of blocked matrix products). show_progress: True, tqdm bars;
    "log", a log line at each tenth of a long stage; False, nothing.

    settings: an `EvalSettings` (what `glossy eval` reads from eval.*); None: the in-sample reading alone,
    the one that needs no other images (candidates=["test"], heldout=False). Keyword overrides replace its
    fields (`evaluate(model, x, is_samples=500)`), checked as the configuration checks them.

    candidates: where the candidate latents z_i come from, any of `SOURCES`: "test" (the posterior means
    of x itself, the paper's text; its statistics keep the plain names glossy_max, glossy_std, lower_bound,
    nll_ba), "train" / "valid" (those of train_x / valid_x) and "prior" (samples of the model's prior);
    each source's statistics are named with its suffix (glossy_max_train, ...). heldout: Blahut-Arimoto
    weights on the training candidates plus the model's prior, fitted on valid_x and scored on x
    (nll_ba_heldout). keep: a dict to receive the per-point and per-candidate tensors (log_px, elbo, and
    log_c_<source>, candidates_<source>: the indices of the images the candidates came from). journal: an
    `ISJournal` that keeps finished importance-sampling points, so that a cut-off evaluation run again
    goes on from them (the same numbers)."""
    s = replace(IN_SAMPLE if settings is None else settings, **overrides)
    candidates, heldout, is_samples, max_points = s.candidates, s.heldout, s.is_samples, s.max_points
    subset_seed, seed, memory_budget_gb = s.subset_seed, s.seed, s.memory_budget_gb
    level, ba_iters, ba_tol = s.interval_level, s.ba_iters, s.ba_tol


    device = torch.device(device)
    t0 = time.perf_counter()
    candidates = list(dict.fromkeys(candidate_list(candidates)))
    sub = subset(len(x), max_points, subset_seed)
    if sub is not None:
        x = x[sub]
    sizes = sizes_for(model, len(x), s, 0 if train_x is None else len(train_x), 0 if valid_x is None else len(valid_x))
    n = sizes.n
    plan = plan_within_budget(model, sizes, is_samples, memory_budget_gb)
    ba_bytes = max(0, int(memory_budget_gb * 2**30) - sizes.reserved_bytes())
    log.info("evaluating N=%d points, candidates %s, S=%d samples on %s%s; %s", n,
             ", ".join(f"{c} M={sizes.m[c]}" for c in candidates), is_samples, device,
             f"; held-out prior on {sizes.m_atoms} training atoms fitted on {sizes.n_fit} validation images"
             if heldout else "", plan.describe())
    ba = [f"in-sample {sizes.m['test'] + 1} x {n}: {storage.ba_storage(sizes.m['test'] + 1, n, ba_bytes)}"
          ] if sizes.m.get("test") else []
    if heldout:
        ba.append(f"held-out {sizes.m_atoms + 1} x {sizes.n_fit}: "
                  f"{storage.ba_storage(sizes.m_atoms + 1, sizes.n_fit, ba_bytes)}")
    if ba:
        log.info("Blahut-Arimoto within the budget's remaining %.3g GiB (kept matrices %.3g GiB): %s",
                 ba_bytes / 2**30, sizes.reserved_bytes() / 2**30, "; ".join(ba))
    macs = model.decoder_macs()
    m_all = sum(sizes.m.values()) + sizes.m_atoms
    n_is = n + sizes.n_fit
    log.info("cost: importance sampling %d decoder passes, glossy matrices %d %s; about %.3g GFLOP",
             n_is * is_samples, m_all * n if model.autoregressive else m_all,
             "decoder passes (M x N, autoregressive)" if model.autoregressive
             else "decoder passes (M) + M x N products",
             2e-9 * macs * (n_is * is_samples + (m_all * n if model.autoregressive else m_all)))

    def images(src: str) -> torch.Tensor:
        return {"test": x, "train": train_x, "valid": valid_x}[src]

    # which images give the candidates of each source: a seeded subset where capped
    seeds = {"test": subset_seed + 1, "train": subset_seed + 2, "valid": subset_seed + 3}
    picks = {c: subset(len(images(c)), sizes.m[c], seeds[c]) for c in candidates if c != "prior"}
    timing: dict[str, float] = {}
    gen_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    torch.manual_seed(seed)
    result: dict = {"n_points": n, "is_samples": is_samples, "candidates": candidates}
    lc_by: dict[str, torch.Tensor] = {}
    try:
        with model.frozen():
            with progress_bar(show_progress, n, "importance sampling", "points") as bar:
                log_px, elbo = importance_sampling(model, x, is_samples, plan, device, bar, journal=journal)
            timing["importance_sampling"] = time.perf_counter() - t0
            fail_if_not_finite(log_px, "the importance-sampled log p(x_j)", ("point",))
            nll = bounds.nll(log_px)
            result.update(nll=nll, elbo=elbo.mean().item())
            lpx = log_px.to(device)
            groups = min(s.jackknife, n)
            weights = intervals.group_weights(n, groups, seed).to(device) if groups >= 2 else None
            if weights is not None:
                result.update(nll_ci=list(intervals.normal_interval(-log_px, level)), interval_level=level,
                              interval_method=f"delete-a-group jackknife, {groups} groups; nll: normal")

            cache: dict[str, torch.Tensor] = {}

            def zs(src: str) -> torch.Tensor:
                if src == "train":  # used twice with the held-out sandwich: computed once
                    if "train" not in cache:
                        pick = picks["train"] if "train" in picks else subset(len(train_x), sizes.m_atoms,
                                                                               seeds["train"])
                        cache["train"] = posterior_means(model, train_x if pick is None else train_x[pick], device)
                    return cache["train"]
                if src == "prior":
                    torch.manual_seed(seed + 2)
                    return prior_candidates_of(model, sizes.m["prior"], device)
                imgs = images(src) if picks[src] is None else images(src)[picks[src]]
                return posterior_means(model, imgs, device)

            if "test" in candidates:  # in-sample: the whole matrix is kept for the sandwich and the paired jackknife
                t1 = time.perf_counter()
                lc_by["test"], fields = in_sample(
                    model, x, zs("test"), lpx, nll, plan, device, show_progress, paired_ok=picks["test"] is None,
                    weights=weights, level=level, ba_iters=ba_iters, ba_tol=ba_tol, ba_bytes=ba_bytes, timing=timing)
                result.update(fields)
                timing["test_candidates"] = time.perf_counter() - t1

            log_w = None
            if heldout:  # fit a prior on the training atoms to validation images; score it below on x
                t1 = time.perf_counter()
                fit = valid_x if sizes.n_fit == len(valid_x) else valid_x[subset(len(valid_x), sizes.n_fit,
                                                                                  subset_seed + 4)]
                torch.manual_seed(seed + 1)
                log_w, fields = heldout_fit(model, fit, zs("train"), plan, device, show_progress, is_samples,
                                             ba_iters=ba_iters, ba_tol=ba_tol, ba_bytes=ba_bytes, timing=timing,
                                             journal=journal)
                result.update(fields)
                timing["heldout_fit"] = time.perf_counter() - t1
                if "train" not in candidates:  # score the atoms on x alone
                    _, _, mix = stream_source(model, x, zs("train"), lpx, plan, device, log_w_atoms=log_w[:-1])
                    heldout_score(result, log_w, lpx, mix, weights is not None, level)

            for src in candidates:
                if src == "test":
                    continue
                t1 = time.perf_counter()
                z = zs(src)
                lw = log_w[:-1] if src == "train" and log_w is not None else None
                with progress_bar(show_progress, len(z), f"glossy matrix ({src} candidates)", "candidates") as bar:
                    lc, lcb, mix = stream_source(model, x, z, lpx, plan, device, weights, lw, bar)
                lc_by[src] = lc.cpu()
                result.update(source_stats(lc, nll, f"_{src}"))
                result[f"n_candidates_{src}"] = len(z)
                if lcb is not None:
                    reps = intervals.replicate_stats(lcb, weights, lpx, paired=False)
                    for k in ("glossy_max", "glossy_std", "lower_bound"):
                        result[f"{k}_{src}_ci"] = list(intervals.jackknife_interval(result[f"{k}_{src}"], reps[k],
                                                                                     level))
                if mix is not None:
                    heldout_score(result, log_w, lpx, mix, weights is not None, level)
                timing[f"{src}_candidates"] = time.perf_counter() - t1
    finally:
        torch.random.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    if true_model is not None:
        true_lpx = true_model.log_marginal(x)
        exact_lc = bounds.log_c(true_model.log_likelihood_matrix(x), log_px)
        result["true_nll"] = bounds.nll(true_lpx)
        result["exact_lower_bound"] = nll - exact_lc.max().item()
        result["exact_glossy_max"] = exact_lc.max().item()
    if keep is not None:
        keep.update(log_px=log_px, elbo=elbo, **{f"log_c_{c}": v for c, v in lc_by.items()},
                    **{f"candidates_{c}": (torch.arange(sizes.m[c]) if p is None else p) for c, p in picks.items()})
    timing["total"] = time.perf_counter() - t0
    result["timing_s"] = timing
    result["plan"] = plan.__dict__
    if sub is not None:
        result["subset_seed"] = subset_seed
    keys = ["nll", "elbo", "glossy_max", "glossy_std", "lower_bound", "nll_ba", "nll_ba_heldout"]
    keys += [f"{k}_{c}" for c in candidates for k in ("glossy_max", "glossy_std", "lower_bound")]
    _finite_or_fail(result, keys)
    return result
