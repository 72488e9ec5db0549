"""Which reading of the paper produces its glossy columns? The evidence, recomputed for trained runs.

For each run (its best.pt) it recomputes log c(z) = log (1/N) sum_j l(x_j | z) / tau(x_j) over the N
test images under every reading of "the candidates z_i" and "tau" that we could think of, and prints
glossy max, std and mean for each beside the paper's values:

  test (the text)          candidates = posterior means of the N test images, tau = p^(x) (IS)
  test, own image out      the same, each candidate's own image left out of its sum (N - 1 images)
  test, one sample         one posterior sample z_i ~ q(z|x_i) instead of the mean
  test, ELBO as tau        tau = exp(ELBO(x_j)) instead of p^(x_j)
  test, batches of 100     c summed within mini-batches of 100 test images (the candidate's own batch)
  train (all)              candidates = posterior means of every training image
  train, N images          a seeded subset of N training images
  train, one sample        one posterior sample per training image
  train, ELBO as tau       all training images, tau = exp(ELBO)
  valid                    posterior means of the validation images
  prior, N samples         N samples of the model's prior

For the in-sample readings it also gives the share of candidates whose own image is the largest term
of their sum. Popoviciu's check: in-sample, log c(z_i) >= -log N for a candidate dominated by its own
image, so std <= (max + log N) / 2 (times sqrt(N / (N - 1)), unbiased); every row of the paper's Table 1
is checked against it. The per-point log p^(x_j) and ELBO come from the run's points.pt (written by
`glossy eval` / `glossy train`) when it covers the whole test split, else they are importance-sampled
here with --samples.

    python scripts/glossy_forensics.py [--data-dir D] [--samples S] [--out results/glossy_forensics.md] RUN ...
    python scripts/glossy_forensics.py --out results/glossy_forensics.md      # the Popoviciu check only
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from glossy import bounds
from glossy.candidates import likelihood_matrix, posterior_means, prior_candidates_of
from glossy.errors import GlossyError
from glossy.importance import importance_sampling
from glossy.memory import Plan
from glossy_cli.eval_cmd import candidate_images
from glossy_cli.runs import POINTS, load_trained
from glossy_cli.table import paper_table

# test-set sizes of the paper's data sets (the N of log N in Popoviciu's check)
TEST_SIZES = {"mnist": 10000, "omniglot": 8070, "caltech101": 2307, "frey": 200, "histopathology": 2000,
              "cifar10": 10000, "synthetic": 10000}
BATCH = 100


def popoviciu_table(paper: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in paper.iterrows():
        n = TEST_SIZES[r["dataset"]]
        chk = bounds.popoviciu(float(r["glossy_max"]), float(r["glossy_std"]), n)
        rows.append({"dataset": r["dataset"], "model": r["model"], "prior": r["prior"], "N": n,
                     "max": r["glossy_max"], "std": r["glossy_std"], "bound": chk["popoviciu_bound"],
                     "violates": chk["violates"]})
    return pd.DataFrame(rows)


@torch.no_grad()
def log_c_streamed(model, x, z, taus, block: int = 2000) -> list[torch.Tensor]:
    """log c(z_i) over x for each tau in taus, one block of candidates at a time: [[M] per tau]."""
    plan = Plan(1, 1, block, len(x))
    outs = [[] for _ in taus]
    for i in range(0, len(z), block):
        L = likelihood_matrix(model, x, z[i : i + block], plan, torch.device("cpu"))
        for o, t in zip(outs, taus):
            o.append(bounds.log_c(L, t))
    return [torch.cat(o) for o in outs]


def row(name: str, lc: torch.Tensor, own_share: float | None = None) -> dict:
    st = bounds.glossy_stats(lc)
    return {"reading": name, "M": len(lc), "max": st["glossy_max"], "std": st["glossy_std"],
            "mean": lc.mean().item(), "own image largest": "" if own_share is None else f"{100 * own_share:.0f}%"}


@torch.no_grad()
def forensics(run: Path, data_dir: str | None, samples: int, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    cfg, splits, model = load_trained(run, data_dir)
    x = splits.test
    n = len(x)
    info = {"run": run.name, "dataset": splits.meta.name, "model": cfg.model.name, "prior": cfg.prior.name, "N": n}
    pts = run / POINTS
    kept = torch.load(pts, weights_only=True) if pts.is_file() else None
    with model.frozen():
        if kept is not None and kept.get("split") == "test" and len(kept["log_px"]) == n:
            lpx, elbo = kept["log_px"], kept["elbo"]
            info["tau"] = f"points.pt (S = {kept['eval_config']['is_samples']})"
        else:
            torch.manual_seed(seed)
            lpx, elbo = importance_sampling(model, x, samples, Plan(1, samples, 1, 1), torch.device("cpu"))
            info["tau"] = f"importance-sampled here (S = {samples})"
        info["nll"] = -lpx.mean().item()
        imgs = candidate_images(splits, seed)
        gen = torch.Generator().manual_seed(seed)
        rows = []
        # in-sample: the whole N x N matrix
        z = posterior_means(model, x, torch.device("cpu"))
        L = likelihood_matrix(model, x, z, Plan(1, 1, 2000, n), torch.device("cpu")).double()
        A = L - lpx  # [N, N]: A[i, j] = log l(x_j | z_i) - log p^(x_j)
        own = (A.argmax(1) == torch.arange(n)).double().mean().item()
        rows.append(row("test (the text)", torch.logsumexp(A, 1) - math.log(n), own))
        A_out = A.clone()
        A_out.fill_diagonal_(-math.inf)
        rows.append(row("test, own image left out", torch.logsumexp(A_out, 1) - math.log(n - 1)))
        torch.manual_seed(seed + 1)
        z1 = model.sample_posterior(x, 1)[0][0]
        A1 = likelihood_matrix(model, x, z1, Plan(1, 1, 2000, n), torch.device("cpu")).double() - lpx
        own1 = (A1.argmax(1) == torch.arange(n)).double().mean().item()
        rows.append(row("test, one posterior sample", torch.logsumexp(A1, 1) - math.log(n), own1))
        rows.append(row("test, ELBO as tau", torch.logsumexp(L - elbo, 1) - math.log(n)))
        nb = n // BATCH
        if nb >= 1:
            blocks = [torch.logsumexp(A[b * BATCH : (b + 1) * BATCH, b * BATCH : (b + 1) * BATCH], 1)
                      for b in range(nb)]
            rows.append(row(f"test, batches of {BATCH}", torch.cat(blocks) - math.log(BATCH)))
        del L, A, A_out, A1
        tr, va = imgs["train_x"], imgs["valid_x"]
        zt = posterior_means(model, tr, torch.device("cpu"))
        lc_mean, lc_elbo = log_c_streamed(model, x, zt, [lpx, elbo])
        rows.append(row("train (all)", lc_mean))
        sub = torch.randperm(len(tr), generator=gen)[:n]
        rows.append(row("train, N images", lc_mean[sub]))
        torch.manual_seed(seed + 2)
        zs = torch.cat([model.sample_posterior(tr[i : i + 1000], 1)[0][0] for i in range(0, len(tr), 1000)])
        rows.append(row("train, one posterior sample", log_c_streamed(model, x, zs, [lpx])[0]))
        rows.append(row("train, ELBO as tau", lc_elbo))
        zv = posterior_means(model, va, torch.device("cpu"))
        rows.append(row("valid", log_c_streamed(model, x, zv, [lpx])[0]))
        torch.manual_seed(seed + 3)
        zp = prior_candidates_of(model, n, torch.device("cpu"))
        rows.append(row("prior, N samples", log_c_streamed(model, x, zp, [lpx])[0]))
    df = pd.DataFrame(rows)
    p = paper_table().set_index(["dataset", "model", "prior"])
    key = (info["dataset"], info["model"], info["prior"])
    info["paper"] = p.loc[key].to_dict() if key in p.index else None
    test = df.iloc[0]
    info["popoviciu"] = bounds.popoviciu(test["max"], test["std"], n)
    return info, df


def fmt(v, d=1):
    return f"{v:.{d}f}" if isinstance(v, float) else str(v)


def markdown(results: list[tuple[dict, pd.DataFrame]], pop: pd.DataFrame, argv: list[str]) -> str:
    out = ["# Glossy statistics under every reading of the paper",
           "",
           f"Written by `python scripts/glossy_forensics.py {' '.join(argv)}` (torch {torch.__version__}). "
           "Each row recomputes log c(z) = log (1/N) sum_j l(x_j | z) / tau(x_j) over the N test images for one "
           "reading of where the candidates z come from and what tau is; see the script's docstring.", ""]
    if results:
        out += ["## Summary: the paper's glossy columns against the two main readings", "",
                "| run | N | NLL | paper NLL | max: test / train / paper | std: test / train / paper | "
                "std train / paper |", "|---|---|---|---|---|---|---|"]
        for info, df in results:
            pp = info["paper"] or {}
            t, tr = df.set_index("reading").loc["test (the text)"], df.set_index("reading").loc["train (all)"]
            ratio = f"{tr['std'] / pp['glossy_std']:.2f}" if pp else ""
            out.append(f"| {info['run']} | {info['N']} | {info['nll']:.2f} | {fmt(pp.get('nll', ''), 2)} | "
                       f"{t['max']:.1f} / {tr['max']:.1f} / {fmt(pp.get('glossy_max', ''))} | "
                       f"{t['std']:.1f} / {tr['std']:.1f} / {fmt(pp.get('glossy_std', ''))} | {ratio} |")
        out.append("")
    for info, df in results:
        pp = info["paper"]
        out += [f"## {info['run']}", "",
                f"{info['dataset']} / {info['model']} / {info['prior']}: N = {info['N']} test images, "
                f"NLL {info['nll']:.2f}" + (f" (paper {pp['nll']:.2f})" if pp else "") + f"; tau from {info['tau']}. "
                + (f"Paper: glossy max {pp['glossy_max']}, std {pp['glossy_std']}." if pp else "No paper row."), "",
                "| reading | M | max | std | mean | own image largest |", "|---|---|---|---|---|---|"]
        for _, r in df.iterrows():
            out.append(f"| {r['reading']} | {r['M']} | {r['max']:.1f} | {r['std']:.1f} | {r['mean']:.1f} | "
                       f"{r['own image largest']} |")
        pc = info["popoviciu"]
        verdict = ""
        if pp:
            verb = "violates" if pp["glossy_std"] > pc["popoviciu_bound"] else "meets"
            verdict = f"; the paper's {pp['glossy_std']} {verb} the bound computed from our max"
        out += ["", f"In-sample Popoviciu bound on the std: {pc['popoviciu_bound']:.1f} "
                f"(ours {df.iloc[0]['std']:.1f}{verdict}).", ""]
    n_bad = int(pop["violates"].sum())
    out += ["## Popoviciu's check on every row of the paper's Table 1", "",
            "In-sample candidates: log c(z_i) >= -log N whenever a candidate's own image dominates its sum "
            "(l(x_i | z_i) >= p(x_i)), so std <= (max + log N) / 2 * sqrt(N / (N - 1)). "
            f"{n_bad} of the paper's {len(pop)} rows violate it: their glossy columns cannot come from "
            "candidates that include each test image's own code.", "",
            "| dataset | model | prior | N | max | std | bound | violates |", "|---|---|---|---|---|---|---|---|"]
    for _, r in pop.iterrows():
        out.append(f"| {r['dataset']} | {r['model']} | {r['prior']} | {r['N']} | {r['max']} | {r['std']} | "
                   f"{r['bound']:.1f} | {'yes' if r['violates'] else 'no'} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--samples", type=int, default=1000, help="S when the run has no points.pt for the test split")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print it)")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for run in a.runs:
        if not run.is_dir():
            print(f"glossy_forensics: {run}: no such run directory", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        try:
            results.append(forensics(run, a.data_dir, a.samples))
        except GlossyError as e:
            print(f"glossy_forensics: {run}: {e}", file=sys.stderr)
            return 2
        print(f"{run.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    home = str(Path.home())
    shown = [v.replace(home, "~", 1) if v.startswith(home) else v for v in map(str, argv)]
    text = markdown(results, popoviciu_table(paper_table()), shown)
    if a.out:
        from glossy.atomic import atomic_write_text

        atomic_write_text(a.out, text)
        print(f"wrote {a.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
