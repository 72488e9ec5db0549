"""The coverage study of glossy's 95% intervals (issue 23): one trained model on the synthetic data, K fresh test
sets of the evaluation's size drawn by the data set's own generator (dataset.options.data_seed), each evaluated
as `glossy eval` does (`glossy.evaluation.evaluate`, its own eval.seed, so the Monte Carlo draws vary too).
The target of every statistic is its expectation over test sets, estimated by its mean over the K sets; the
coverage of a method is the fraction of the K intervals that contain that mean, with its binomial Monte Carlo
error sqrt(p (1 - p) / K).

Beside the intervals glossy reports ("reported"), the study recomputes other methods from the same matrices,
so that the choice of method is a measurement: the percentile bootstrap (what glossy reported before), the
bootstrap's standard error around the estimate, the delete-a-group jackknife, and an extreme-value interval
for the in-sample max.

    python scripts/coverage_study.py RUN_DIR --sets 200 --seed 0 --out results/coverage_seed0.md

RUN_DIR: a trained synthetic run (`glossy train dataset=synthetic ...`). Re-run with another --seed to check
that the coverages agree within their Monte Carlo errors. Per-set values go to OUT with .csv for .md,
the summary to OUT_summary.csv, the settings and the command to OUT_meta.json; scripts/coverage_report.py
writes results/coverage.md from the summaries."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from glossy import bounds, intervals
from glossy.candidates import likelihood_matrix, posterior_means
from glossy.evaluation import evaluate
from glossy.importance import importance_sampling
from glossy.memory import eval_sizes, plan_within_budget
from glossy.sandwiches import bound_name
from glossy.settings import EvalSettings
from glossy_cli.runs import load_trained
from glossy_datasets import synthetic

LEVEL = 0.95
GUMBEL_K = 10  # top spacings for the extreme-value scale
Q_LO, Q_HI = -math.log(-math.log((1 - LEVEL) / 2)), -math.log(-math.log((1 + LEVEL) / 2))
EULER = 0.5772156649015329


def gumbel_interval(values: torch.Tensor, k: int = GUMBEL_K) -> tuple[float, float]:
    """An interval for E[max] of N i.i.d. values in the Gumbel domain: max - E[max] ~ a (G - gamma) with G
    standard Gumbel, the scale a estimated by the mean of the top k excesses over the (k+1)-th largest."""
    top = values.to(torch.float64).topk(k + 1).values
    a = (top[:k] - top[k]).mean().item()
    m = top[0].item()
    return m - a * (Q_HI - EULER), m - a * (Q_LO - EULER)


def normal_from_reps(estimate: float, reps: torch.Tensor) -> tuple[float, float]:
    half = 1.959963984540054 * reps.to(torch.float64).std().item()
    return estimate - half, estimate + half


def one_set(model, x, train_x, settings, fit, device, groups: int, n_boot: int, seed: int) -> dict:
    """Every statistic of one test set with each method's interval: {stat: {method: (lo, hi)}, stat: est}."""
    keep: dict = {}
    res = evaluate(model, x, settings, train_x=train_x, device=device, show_progress=False, keep=keep)
    lpx = keep["log_px"].to(torch.float64)
    sizes = eval_sizes(model, len(x), settings, len(train_x), 0)
    plan = plan_within_budget(model, sizes, settings.is_samples, settings.memory_budget_gb)
    with model.frozen():
        z_test = posterior_means(model, x, device)
        z_train = posterior_means(model, train_x[keep["candidates_train"]], device)
        L = {"test": likelihood_matrix(model, x, z_test, plan, device).to(torch.float64),
             "train": likelihood_matrix(model, x, z_train, plan, device).to(torch.float64)}
        if fit is not None:
            fit_w, fit_L = fit
            mix_atoms = bounds.mixture_log_marginal(
                likelihood_matrix(model, x, fit_L, plan, device).to(torch.float64), fit_w[:-1])
    out: dict = {"nll": {"est": res["nll"], "reported": tuple(res.get("nll_ci", (math.nan, math.nan)))}}
    boot = intervals.bootstrap_counts(len(x), n_boot, seed)
    jack = intervals.group_weights(len(x), groups, seed)
    for src in ("test", "train"):
        paired = src == "test"
        rb = intervals.replicates(L[src], lpx, boot, paired)
        rj = intervals.replicates(L[src], lpx, jack, paired)
        for k in ("glossy_max", "glossy_std", "lower_bound"):
            key = bound_name(f"_{src}") if k == "lower_bound" else f"{k}_{src}"
            est = res[key]
            d = {"est": est, "reported": tuple(res.get(f"{key}_ci", (math.nan, math.nan))),
                 "percentile bootstrap": intervals.percentile_interval(rb[k], LEVEL),
                 "bootstrap se": normal_from_reps(est, rb[k]),
                 f"jackknife G={groups}": intervals.jackknife_interval(est, rj[k], LEVEL)}
            if k == "glossy_max" and src == "test":
                d["extreme value (Gumbel)"] = gumbel_interval(keep["log_c_test"])
            out[key] = d
        if src == "test":
            out["nll"]["percentile bootstrap"] = intervals.percentile_interval(rb["nll"], LEVEL)
            out["nll"]["normal"] = intervals.normal_interval(-lpx, LEVEL)
    # in-sample BA: the envelope (delta) interval treats the fitted weights as fixed
    ba = bounds.prior_fit(L["test"], lpx, max_iter=settings.ba_iters, tol=settings.ba_tol)
    mix = torch.logaddexp(bounds.mixture_log_marginal(L["test"], ba["log_w"][:-1]), lpx + ba["log_w"][-1])
    out["nll_ba"] = {"est": res["nll_ba"], "reported": tuple(res.get("nll_ba_ci", (math.nan, math.nan))),
                     "normal, weights fixed": intervals.normal_interval(-mix, LEVEL)}
    if fit is not None:
        score = -torch.logaddexp(mix_atoms, lpx + fit_w[-1])
        out["nll_ba_heldout"] = {"est": score.mean().item(), "normal": intervals.normal_interval(score, LEVEL)}
    return out


def heldout_prior(model, cfg, splits, settings, device, n_fit: int):
    """The held-out prior of `glossy eval`, fitted once on n_fit validation images (fixed over the test sets)."""
    fit_x = splits.val[:n_fit]
    sizes = eval_sizes(model, n_fit, settings, len(splits.train), 0)
    plan = plan_within_budget(model, sizes, settings.is_samples, settings.memory_budget_gb)
    torch.manual_seed(settings.seed + 1)
    with model.frozen():
        lpx_fit, _ = importance_sampling(model, fit_x, settings.is_samples, plan, device)
        atoms = posterior_means(model, splits.train[: settings.max_candidates], device)
        Lf = likelihood_matrix(model, fit_x, atoms, plan, device)
    fit = bounds.prior_fit(Lf, lpx_fit, max_iter=settings.ba_iters, tol=settings.ba_tol)
    return fit["log_w"], atoms


def coverage_table(rows: list[dict]) -> pd.DataFrame:
    recs = []
    stats = rows[0].keys()
    for stat in stats:
        est = torch.tensor([r[stat]["est"] for r in rows], dtype=torch.float64)
        target = est.mean().item()
        for method in rows[0][stat]:
            if method == "est":
                continue
            lo = torch.tensor([r[stat][method][0] for r in rows], dtype=torch.float64)
            hi = torch.tensor([r[stat][method][1] for r in rows], dtype=torch.float64)
            if torch.isnan(lo).all():
                continue
            hit = ((lo <= target) & (target <= hi)).to(torch.float64)
            p = hit.mean().item()
            recs.append({"statistic": stat, "method": method, "coverage": p,
                         "mc_error": math.sqrt(max(p * (1 - p), 1e-12) / len(rows)),
                         "below": (hi < target).to(torch.float64).mean().item(),
                         "above": (lo > target).to(torch.float64).mean().item(),
                         "contains_estimate": ((lo <= est) & (est <= hi)).to(torch.float64).mean().item(),
                         "mean_width": (hi - lo).mean().item(), "target": target, "sd_over_sets": est.std().item()})
    return pd.DataFrame(recs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--sets", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--is-samples", type=int, default=100)
    ap.add_argument("--max-candidates", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--heldout-fit", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=None, help="test-set size (default: the run's n_test)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    cfg, splits, model = load_trained(args.run_dir)
    model = model.to(device)
    opts = dict(cfg.dataset.options)
    n = args.n_test or int(opts.get("n_test", len(splits.test)))
    base = EvalSettings(is_samples=args.is_samples, candidates=["test", "train"], heldout=False,
                        max_candidates=args.max_candidates, jackknife=args.groups, memory_budget_gb=2.0)
    fit = heldout_prior(model, cfg, splits, base, device, args.heldout_fit) if args.heldout_fit else None
    rows, t0 = [], time.perf_counter()
    for k in range(args.sets):
        data_seed = 1_000_000 * (args.seed + 1) + k
        x = synthetic.load(n_train=1, n_val=1, n_test=n, flip=float(opts.get("flip", 0.02)), data_seed=data_seed).test
        s = EvalSettings(**{**base.__dict__, "seed": 10_000 * (args.seed + 1) + k})
        rows.append(one_set(model, x, splits.train, s, fit, device, args.groups, args.bootstrap, seed=k))
        if (k + 1) % 10 == 0:
            print(f"{k + 1}/{args.sets} test sets, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    table = coverage_table(rows)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.out:
        out = Path(args.out)
        long = pd.DataFrame([{"set": i, "statistic": st, "method": m, "value": v if m == "est" else None,
                              "lo": None if m == "est" else v[0], "hi": None if m == "est" else v[1]}
                             for i, r in enumerate(rows) for st, d in r.items() for m, v in d.items()])
        long.to_csv(out.with_suffix(".csv"), index=False)
        table.to_csv(out.with_name(out.stem + "_summary.csv"), index=False)
        seconds = round(time.perf_counter() - t0)
        head = (f"seed {args.seed}: {args.sets} test sets of N = {n}, S = {args.is_samples}, "
                f"{args.max_candidates} training candidates, G = {args.groups}, B = {args.bootstrap}; torch "
                f"{torch.__version__}, Python {platform.python_version()}; {seconds} s")
        print(head)
        meta = {"seed": args.seed, "sets": args.sets, "n_test": n, "is_samples": args.is_samples,
                "max_candidates": args.max_candidates, "groups": args.groups, "bootstrap": args.bootstrap,
                "heldout_fit": args.heldout_fit, "level": LEVEL, "seconds": seconds,
                "torch": torch.__version__, "python": platform.python_version(),
                "command": "python scripts/coverage_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "run_dir": args.run_dir, "model": {"run": Path(args.run_dir).name, "nll": _run_nll(args.run_dir)}}
        out.with_name(out.stem + "_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


def _run_nll(run_dir: str) -> float | None:
    """The study model's own NLL on its test set (its result.json), for the report."""
    path = Path(run_dir) / "result.json"
    return json.loads(path.read_text()).get("nll") if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
