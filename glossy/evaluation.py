"""The evaluation of a trained model, top to bottom: `evaluate` builds one `EvalContext` (glossy/context.py) and
runs the stages on it: importance sampling (importance.py), the in-sample sandwich of the test candidates and the
held-out prior (sandwiches.py), each other source's glossy matrix (candidates.py), the exact numbers of a known
true model. The maths is in bounds.py and intervals.py; memory.py plans the chunks, journal.py keeps finished
points, progress.py reports. One typed settings object, `EvalSettings` (settings.py), says what to compute."""

from __future__ import annotations

import logging
import math

import torch

import glossy.bounds as bounds
import glossy.intervals as intervals

from .candidates import fail_if_not_finite, stream_source
from .context import EvalContext, RunOptions
from .errors import GlossyError
from .importance import forked_rng, importance_sampling
from .progress import progress_bar
from .sandwiches import bound_name, heldout_fit, heldout_score, in_sample, source_stats
from .settings import EvalSettings

log = logging.getLogger("glossy")

CHECKED = ["nll", "elbo", "glossy_max", "glossy_std", "lower_bound", "nll_ba", "nll_ba_heldout"]

# the version of evaluate()'s numerics: raised in any commit that changes one of its estimates beyond float rounding
# for the same settings (as the synthetic reference run's regeneration must say, tests/test_reproduce.py); a
# result.json stamped with another number was made by arithmetic that gives other estimates
NUMERICS = 3  # 3: importance sampling's Bernoulli log-likelihood takes softplus as log(1 + e^l) on the heads'
# bounded logits (2: the best priors by glossy.working_set, at their optimum; 1: 500 plain Blahut-Arimoto steps)


def as_latent_variable_model(model):
    """model itself, or a pythae model adapted (glossy.adapters)."""
    from .adapters import from_pythae, is_pythae_model

    return from_pythae(model) if is_pythae_model(model) else model


def evaluate(model, x: torch.Tensor, settings: EvalSettings | None = None, *, train_x: torch.Tensor | None = None,
             valid_x: torch.Tensor | None = None, true_model=None, run: RunOptions | None = None,
             **overrides) -> dict:
    """Every number of result.json for model on data x [N, C, H, W]. Pure in its inputs: the same
    model, data and settings give the same numbers; `memory_budget_gb` changes only the chunking, never
    the numbers (up to floating-point noise of blocked matrix products).

    settings: an `EvalSettings` (what `glossy eval` reads from eval.*); None: the in-sample reading alone,
    the one that needs no other images (candidates=["test"], heldout=False). Keyword overrides replace its
    fields (`evaluate(model, x, is_samples=500)`), checked as the configuration checks them.

    candidates: where the candidate latents z_i come from, any of `SOURCES`: "test" (the posterior means
    of x itself, the paper's text; its statistics keep the plain names glossy_max, glossy_std, lower_bound,
    nll_ba), "train" / "valid" (those of train_x / valid_x) and "prior" (samples of the model's prior);
    each source's statistics are named with its suffix (glossy_max_train, ...). heldout: Blahut-Arimoto
    weights on the training candidates plus the model's prior, fitted on valid_x and scored on x
    (nll_ba_heldout). true_model: a model whose exact log marginal and likelihood matrix are known (the
    synthetic data's), for the exact numbers beside the estimates.

    run: a `RunOptions` (device, show_progress, keep, journal: how it runs and what it leaves beside the
    numbers); its fields may be given as keywords too (`evaluate(model, x, device="cuda", show_progress=False)`).
    model: a `LatentVariableModel`, or a pythae model object (adapted by `glossy.adapters.from_pythae`).
    keep receives the per-point and per-candidate tensors (log_px, elbo, and log_c_<source>,
    candidates_<source>: the indices of the images the candidates came from)."""
    named, overrides = RunOptions.split(overrides)
    model = as_latent_variable_model(model)
    ctx = EvalContext.build(model, x, settings, train_x, valid_x, run or named, overrides)
    ctx.describe()
    with ctx.timer("total"):
        with forked_rng(ctx.device), model.frozen():
            torch.manual_seed(ctx.seeds.importance)
            sample_points(ctx)
            if "test" in ctx.candidates:  # in-sample: the whole matrix kept for the sandwich and paired jackknife
                with ctx.timer("test_candidates"):
                    in_sample(ctx)
            if ctx.settings.heldout:
                with ctx.timer("heldout_fit"):
                    heldout_fit(ctx)
            for src in ctx.candidates:
                if src != "test":
                    with ctx.timer(f"{src}_candidates"):
                        other_source(ctx, src)
        if true_model is not None:
            exact(ctx, true_model)
        keep(ctx)
    return finish(ctx)


def sample_points(ctx: EvalContext) -> None:
    """log p^(x_j) and the ELBO of every point by importance sampling; the NLL, and the jackknife's group
    weights with the NLL's interval where intervals are asked for."""
    s = ctx.settings
    with ctx.timer("importance_sampling"), progress_bar(ctx.run.show_progress, ctx.n, "importance sampling",
                                                        "points") as bar:
        ctx.log_px, elbo = importance_sampling(ctx.model, ctx.x, s.is_samples, ctx.plan, ctx.device, bar,
                                               journal=ctx.run.journal)
    fail_if_not_finite(ctx.log_px, "the importance-sampled log p(x_j)", ("point",))
    ctx.result.update(n_points=ctx.n, is_samples=s.is_samples, candidates=ctx.candidates,
                      nll=bounds.nll(ctx.log_px), elbo=elbo.mean().item())
    ctx.lpx = ctx.log_px.to(ctx.device)
    ctx.elbo = elbo
    groups = min(s.jackknife, ctx.n)
    if groups >= 2:
        ctx.weights = intervals.group_weights(ctx.n, groups, s.seed).to(ctx.device)
        ctx.result.update(nll_ci=list(intervals.normal_interval(-ctx.log_px, ctx.level)),
                          interval_level=ctx.level,
                          interval_method=f"delete-a-group jackknife, {groups} groups; nll: normal")


def other_source(ctx: EvalContext, src: str) -> None:
    """A source other than the test images (train, valid, prior): its glossy matrix streamed in blocks into log c,
    its statistics with their jackknife intervals, and for the training atoms the held-out prior's score."""
    z = ctx.codes(src)
    lw = ctx.log_w[:-1] if src == "train" and ctx.log_w is not None else None
    with progress_bar(ctx.run.show_progress, len(z), f"glossy matrix ({src} candidates)", "candidates") as bar:
        lc, lcb, mix = stream_source(ctx.model, ctx.x, z, ctx.lpx, ctx.plan, counts=ctx.weights,
                                     log_w_atoms=lw, progress=bar)
    ctx.log_c[src] = lc.cpu()
    ctx.result.update(source_stats(lc, ctx.nll, f"_{src}"))
    ctx.result[f"n_candidates_{src}"] = len(z)
    if lcb is not None:
        reps = intervals.replicate_stats(lcb, ctx.weights, ctx.lpx, paired=False)
        for k, key in (("glossy_max", f"glossy_max_{src}"), ("glossy_std", f"glossy_std_{src}"),
                       ("lower_bound", bound_name(f"_{src}"))):
            ctx.result[f"{key}_ci"] = list(intervals.jackknife_interval(ctx.result[key], reps[k], ctx.level))
    if mix is not None:
        heldout_score(ctx, mix)


def exact(ctx: EvalContext, true_model) -> None:
    """The true NLL and the exact lower bound where the true model is known (synthetic data)."""
    exact_lc = bounds.log_c(true_model.log_likelihood_matrix(ctx.x), ctx.log_px)
    ctx.result.update(true_nll=bounds.nll(true_model.log_marginal(ctx.x)),
                      exact_lower_bound=ctx.nll - exact_lc.max().item(), exact_glossy_max=exact_lc.max().item())


def keep(ctx: EvalContext) -> None:
    """The per-point and per-candidate tensors, for a caller that asked for them (RunOptions.keep)."""
    if ctx.run.keep is not None:
        ctx.run.keep.update(log_px=ctx.log_px, elbo=ctx.elbo, **{f"log_c_{c}": v for c, v in ctx.log_c.items()},
                            **{f"candidates_{c}": (torch.arange(ctx.sizes.m[c]) if p is None else p)
                               for c, p in ctx.picks.items()})


def finish(ctx: EvalContext) -> dict:
    """The result with its timings and plan, once every checked number is finite."""
    result = {**ctx.result, "timing_s": ctx.timer.seconds, "plan": ctx.plan.__dict__}
    if ctx.points is not None:
        result["subset_seed"] = ctx.settings.subset_seed
    keys = CHECKED + [k for c in ctx.candidates for k in (f"glossy_max_{c}", f"glossy_std_{c}", bound_name(f"_{c}"))]
    bad = [k for k in keys if isinstance(result.get(k), float) and not math.isfinite(result[k])]
    if bad:
        raise GlossyError("evaluation produced non-finite values for " + ", ".join(
            f"{k} = {result[k]}" for k in bad) + "; the model's log-likelihoods overflowed or are NaN "
            "(check the checkpoint's training history); nothing was written")
    result["bound_checks"] = bound_checks(result)
    return result


# the NLLs glossy exhibits for the images it evaluates: the model's own and those of its re-weighted priors
EXHIBITED = ("nll", "nll_ba", "nll_ba_heldout")


def bound_checks(result: dict) -> list[str]:
    """Each number named a lower bound (`lower_bound`, `lower_bound_<source>`) that exceeds an NLL glossy itself
    exhibits for the same images, as a sentence naming both; each is also a warning in the log. A bound from
    the max over candidates is a bound only where that max is the sup of log c over the prior's support: one that
    fails here says so. Empty when every bound holds."""
    found = []
    bounds_named = {k for k in result if k.startswith("lower_bound") and not k.endswith("_ci")}
    bounds_named.discard("lower_bound_test")  # lower_bound under its source's name: one number, checked once
    for b in sorted(bounds_named):
        for n in EXHIBITED:
            if isinstance(result.get(b), float) and isinstance(result.get(n), float) and result[b] > result[n]:
                found.append(f"{b} = {result[b]:.3f} exceeds {n} = {result[n]:.3f}, an NLL glossy exhibits for the "
                             f"same images: it is not a bound on every prior")
    for line in found:
        log.warning("%s", line)
    return found
