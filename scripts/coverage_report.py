"""Write results/coverage.md from the coverage study's outputs (scripts/coverage_study.py): every number in it
is read from the studies' <name>_summary.csv and <name>_meta.json, none is typed.

    python scripts/coverage_report.py results/coverage_seed0 results/coverage_seed1 \\
        results/coverage_n200_seed0 results/coverage_n200_seed1 --out results/coverage.md

Each argument is a study's --out without its suffix. Below the marker FINDINGS an existing report keeps its
hand-written findings. Studies of the same test-set size N and different --seed
are the reruns: for each statistic and method the report gives |difference| / its combined Monte Carlo error."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import pandas as pd

from glossy.atomic import atomic_write_text

AIM = (0.93, 0.97)
FINDINGS = "<!-- findings: written by hand, kept by scripts/coverage_report.py when it regenerates the above -->"
FLOOR = 0.90


def load(stem: str) -> tuple[dict, pd.DataFrame]:
    base = Path(stem)
    base = base.with_suffix("") if base.suffix in (".md", ".csv") else base
    meta = json.loads(base.with_name(base.name + "_meta.json").read_text())
    table = pd.read_csv(base.with_name(base.name + "_summary.csv"))
    meta["_sets"] = base.with_name(base.name + ".csv")  # each set's estimate and interval ends
    return meta, table


def large_n_section(studies: list[tuple[dict, pd.DataFrame]]) -> list[str]:
    """The reported intervals of each smaller N against the largest N's target (the mean over its sets, pooled
    over its reruns): how well an interval at N covers what a larger test set would estimate. The max and std
    are plug-in statistics whose expectation moves with N, so these intervals cover the expectation at their own
    N, and less of the large-N one."""
    big = max(m["n_test"] for m, _ in studies)
    targets = pd.concat([reported(t)["target"] for m, t in studies if m["n_test"] == big]).groupby(level=0).mean()
    targets = targets.reindex(list(reported(studies[0][1]).index))
    small = [(m, t) for m, t in studies if m["n_test"] < big]
    if not small:
        return []
    lines = ["## Coverage of the large-N target", "",
             f"The intervals above cover each statistic's expectation at their own N. Against the expectation at "
             f"N={big} (the mean over those studies' sets, pooled over reruns), the same reported intervals of the "
             f"smaller studies cover (± Monte Carlo error; missed below / above):", "",
             f"| statistic | target at N={big} | "
             + " | ".join(f"{label(m)}: target, coverage, missed below / above" for m, _ in small) + " |",
             "|---|---|" + "---|" * len(small)]
    sets = {label(m): pd.read_csv(m["_sets"]) for m, _ in small}
    for st in targets.index:
        cells = []
        for m, t in small:
            df = sets[label(m)]
            rows = df[(df.statistic == st) & df.lo.notna()]
            method = "reported" if (rows.method == "reported").any() else rows.method.iloc[0]
            rows = rows[rows.method == method]
            goal = targets[st]
            cov = ((rows.lo <= goal) & (goal <= rows.hi)).mean()
            err = math.sqrt(cov * (1 - cov) / len(rows))
            own = reported(t).loc[st, "target"]
            cells.append(f"{own:.4g}, {cell(cov, err)}, {(rows.hi < goal).mean():.3f} / {(rows.lo > goal).mean():.3f}")
        lines.append(f"| {st} | {targets[st]:.4g} | " + " | ".join(cells) + " |")
    return lines + [""]


def label(meta: dict) -> str:
    return f"N={meta['n_test']} seed {meta['seed']}"


def reported(table: pd.DataFrame) -> pd.DataFrame:
    """Per statistic, the row of the interval glossy reports: method "reported", or the statistic's only method
    where the study computed one alone (nll_ba_heldout: its normal interval)."""
    rows = [g[g.method == "reported"].iloc[0] if (g.method == "reported").any() else g.iloc[0]
            for _, g in table.groupby("statistic", sort=False)]
    return pd.DataFrame(rows).set_index("statistic")


def cell(p: float, e: float) -> str:
    return f"{p:.3f} ± {e:.3f}"


def report(studies: list[tuple[dict, pd.DataFrame]]) -> str:
    first = studies[0][0]
    lines = [
        "# Coverage of glossy's 95% intervals",
        "",
        "Written by `scripts/coverage_report.py` from the outputs of `scripts/coverage_study.py` (issue 23). One "
        "VAE trained on the synthetic data; for each study, K fresh test sets of N images drawn by the data set's "
        "own generator (`dataset.options.data_seed` = 10^6 (seed + 1) + k), each evaluated as `glossy eval` does "
        "(`glossy.evaluation.evaluate`, `eval.seed` = 10^4 (seed + 1) + k, so the importance samples are drawn "
        "afresh too; the test candidates are the posterior means of each set's own images, the training "
        "candidates the posterior means of a fixed subset of training images). What the intervals cover: the "
        "expectation of each statistic over test sets of the same size N, estimated by the mean over the K sets; "
        "the coverage of a method is the fraction of the K intervals that contain it, its Monte Carlo error "
        "sqrt(p (1 - p) / K). The max and std of log c are plug-in statistics whose expectation moves with N, so "
        "an interval at N is not one for a larger test set's value: the section \"Coverage of the large-N "
        "target\" measures how far. Reruns with another `--seed` use disjoint test sets and evaluation seeds.",
        "",
        "## How it was made",
        "",
        "The study model (80 epochs, on 10^4 synthetic training images):",
        "",
        "```",
        "glossy train dataset=synthetic dataset.options.n_train=10000 dataset.options.n_val=2000 \\",
        "  dataset.options.n_test=1000 model=vae prior=standard train.epochs=80 train.warmup=20 \\",
        "  train.early_stopping=10 train.trajectory_every=0 eval.is_samples=100 eval.candidates=[test] \\",
        "  eval.heldout=false eval.jackknife=0 runs_root=~/glossy-study",
        "```",
        "",
        f"Its run directory `{first['model']['run']}`" + (f", NLL {first['model']['nll']:.2f} on its own test set."
                                                        if first["model"].get("nll") else "."),
        "",
        "The studies (RUN = that directory):",
        "",
        "| study | command | settings | time | torch, Python |",
        "|---|---|---|---|---|",
    ]
    for meta, _ in studies:
        cmd = meta["command"].replace(meta["run_dir"], "RUN").replace("|", "\\|")
        settings = (f"K = {meta['sets']} sets, S = {meta['is_samples']}, {meta['max_candidates']} training "
                    f"candidates, jackknife G = {meta['groups']}, bootstrap B = {meta['bootstrap']}, held-out fit on "
                    f"{meta['heldout_fit']} validation images")
        lines.append(f"| {label(meta)} | `{cmd}` | {settings} | {meta['seconds']} s | {meta['torch']}, "
                     f"{meta['python']} |")
    lines += ["", "The time is the study's wall time on this project's 2-core machine (one torch thread).", ""]

    # the reported intervals, per study, and the reruns' agreement
    rep = {label(m): reported(t) for m, t in studies}
    stats = list(next(iter(rep.values())).index)
    pairs = [(label(a), label(b)) for (a, _), (b, _) in itertools.combinations(studies, 2)
             if a["n_test"] == b["n_test"]]
    lines += [
        "## The intervals glossy reports",
        "",
        "nll, nll_ba (weights fixed), nll_ba_heldout: normal intervals of a mean; glossy max, std and the lower "
        "bounds of each candidate source: the delete-a-group jackknife (G groups of test images, estimate ± "
        "t_{G-1} se). Coverage of the nominal 95% ± its Monte Carlo error; for each pair of reruns at the same N, "
        "|difference| / sqrt(e1² + e2²) (within 2: the rerun agrees within its stated Monte Carlo error).",
        "",
        "| statistic | " + " | ".join(rep) + "".join(f" | {a} vs {b}" for a, b in pairs) + " | missed below / above |",
        "|---|" + "---|" * (len(rep) + len(pairs) + 1),
    ]
    worst_z = 0.0
    for st in stats:
        row = [cell(t.loc[st, "coverage"], t.loc[st, "mc_error"]) for t in rep.values()]
        for a, b in pairs:
            ta, tb = rep[a].loc[st], rep[b].loc[st]
            z = abs(ta.coverage - tb.coverage) / math.hypot(ta.mc_error, tb.mc_error)
            worst_z = max(worst_z, z)
            row.append(f"{z:.2f}")
        sides = ", ".join(f"{t.loc[st, 'below']:.3f} / {t.loc[st, 'above']:.3f}" for t in rep.values())
        lines.append(f"| {st} | " + " | ".join(row) + f" | {sides} |")
    worst = min(((f"{st} at {lab}", t.loc[st, "coverage"]) for st in stats for lab, t in rep.items()),
                key=lambda w: w[1])
    every = [t.loc[st, "contains_estimate"] for t in rep.values() for st in stats]
    lines += [
        "",
        f"Lowest coverage: {worst[1]:.3f} ({worst[0]}); largest rerun difference: {worst_z:.2f} combined Monte "
        f"Carlo errors. Aim: {AIM[0]:.2f}-{AIM[1]:.2f}. The estimate lies inside its own interval in "
        f"{min(every):.0%} of the sets at worst (the intervals are centred at the estimate).",
        "",
    ]

    # every method, per study
    lines += [
        "## Every method compared",
        "",
        "Recomputed from the same matrices: the percentile bootstrap of the test images, candidates fixed (what "
        "glossy reported before), the bootstrap's standard error around the estimate (estimate ± z se), the "
        "jackknife with G groups (what glossy reports) and, for the max, an extreme-value interval (a Gumbel "
        "scale from the top spacings of log c). Coverage ± Monte Carlo error; mean width over the sets.",
        "",
        "| statistic | method | " + " | ".join(f"{label(m)}: coverage, width" for m, _ in studies) + " |",
        "|---|---|" + "---|" * len(studies),
    ]
    methods = studies[0][1][["statistic", "method"]].drop_duplicates().itertuples(index=False)
    failing = []
    for st, m in methods:
        cells = []
        for meta, t in studies:
            r = t[(t.statistic == st) & (t.method == m)]
            if r.empty:
                cells.append("-")
                continue
            r = r.iloc[0]
            cells.append(f"{cell(r.coverage, r.mc_error)}, {r.mean_width:.3g}")
            if r.coverage < FLOOR:
                failing.append(f"{m} for {st} ({r.coverage:.3f} at {label(meta)})")
        lines.append(f"| {st} | {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Below 0.90 somewhere: " + ("; ".join(failing) if failing else "none") + ".",
        "",
        *large_n_section(studies),
        "## Scale of the study",
        "",
        "Target and spread over the test sets of each statistic (the sd over sets is what an interval's width "
        "should match: a 95% normal interval is about 3.9 sd wide).",
        "",
        "| statistic | " + " | ".join(f"{label(m)}: target, sd over sets" for m, _ in studies) + " |",
        "|---|" + "---|" * len(studies),
    ]
    for st in stats:
        cells = [f"{t.loc[st, 'target']:.4g}, {t.loc[st, 'sd_over_sets']:.3g}" for t in rep.values()]
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="each study's --out, without suffix")
    ap.add_argument("--out", default=None, help="the report (default: print it)")
    ap.add_argument("--notes", default=None, help="a markdown file appended as the report's findings")
    args = ap.parse_args(argv)
    try:
        studies = [load(s) for s in args.studies]
    except (OSError, ValueError) as e:
        print(f"coverage_report: {e}", file=sys.stderr)
        return 2
    text = report(studies)
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    if args.out:
        out = Path(args.out)
        old = out.read_text() if out.exists() else ""
        if FINDINGS in old:  # the hand-written findings below the marker survive a regeneration
            text += "\n" + old[old.index(FINDINGS):]
        atomic_write_text(out, text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
