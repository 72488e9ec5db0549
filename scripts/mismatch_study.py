"""A study where the right answer is known: one trained likelihood under deliberately wrong priors.

The trained prior p(z) is replaced by p_s(z) = p(z / s) / s^d, the law of s Z for Z ~ p (s = 1: the trained prior;
s < 1 too narrow, s > 1 too wide), and everything else is kept: the decoder (so the best prior for it, the optimum
Theorem 2 bounds, does not move), the encoder as the importance sampler and the candidates. For each s glossy
evaluates the model as `glossy eval` does; what the theory says should happen:
- the NLL grows away from the trained prior (if s = 1 is not the best of the family, the table shows it);
- every lower bound stays at or below the best NLL exhibited (the model's own at every s, nll_ba, nll_ba_heldout);
- the glossy max grows with the mismatch;
- the Blahut-Arimoto priors win back what the wrong prior lost (nll_ba, nll_ba_heldout nearly flat in s).
Writes results/mismatch_<dataset>.csv (each number with its interval) and a figure beside it.

    python scripts/mismatch_study.py --synthetic [--runs-root ~/glossy-study]
    python scripts/mismatch_study.py --run ~/glossy-study/caltech101-vae-standard-seed0 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from glossy.evaluation import evaluate
from glossy.settings import EvalSettings
from glossy_cli.eval_cmd import candidate_images
from glossy_cli.runs import load_trained
from glossy_models.base import LatentVariableModel

SCALES = (0.5, 0.7, 1.0, 1.4, 2.0)
COLUMNS = ["nll", "elbo", "lower_bound", "bound_train_atoms", "nll_ba", "nll_ba_heldout", "glossy_max",
           "glossy_std", "glossy_max_train", "glossy_std_train", "true_nll", "exact_lower_bound"]


class ScaledPrior(LatentVariableModel):
    """`base` with its prior replaced by the law of s Z, Z ~ base's prior: log p_s(z) = log p(z / s) - d log s."""

    def __init__(self, base: LatentVariableModel, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, float(scale)
        self.input_shape, self.input_type = base.input_shape, base.input_type
        self.latent_dim, self.autoregressive = base.latent_dim, getattr(base, "autoregressive", False)

    def log_prior(self, z):
        return self.base.log_prior(z / self.scale) - self.latent_dim * math.log(self.scale)

    def sample_prior(self, n):
        return self.base.sample_prior(n) * self.scale

    def sample_posterior(self, x, n):
        return self.base.sample_posterior(x, n)

    def posterior_noise_dims(self):
        return self.base.posterior_noise_dims()

    def sample_posterior_given(self, x, eps):
        return self.base.sample_posterior_given(x, eps)

    def log_likelihood(self, x, z):
        return self.base.log_likelihood(x, z)

    def log_likelihood_matrix(self, x, z):
        return self.base.log_likelihood_matrix(x, z)

    def posterior_mean(self, x):
        return self.base.posterior_mean(x)

    def generate(self, z):
        return self.base.generate(z)

    def eval_bytes_per_sample(self):
        return self.base.eval_bytes_per_sample()

    def decoder_modules(self):
        return self.base.decoder_modules()

    def frozen(self):
        return self.base.frozen()


def quick_synthetic_run(runs_root: Path) -> Path:
    """A VAE trained on the synthetic data (whose true model is known) with train=quick: its run directory."""
    glossy = Path(sys.executable).with_name("glossy")
    subprocess.run([str(glossy), "train", "dataset=synthetic", "model=vae", "prior=standard", "train=quick",
                    f"runs_root={runs_root}"], check=True)
    return next(runs_root.glob("synthetic-vae-standard-seed0__train-quick_*"))  # named for its overrides


def study(run: Path, data_dir: str | None, scales, settings: EvalSettings) -> pd.DataFrame:
    cfg, splits, model = load_trained(run, data_dir)
    model.eval()
    rows = []
    for s in scales:
        r = evaluate(ScaledPrior(model, s), splits.test, settings, true_model=splits.meta.true_model,
                     show_progress=False, **candidate_images(splits, settings.seed))
        row = {"dataset": splits.meta.name, "model": cfg.model.name, "prior": cfg.prior.name, "prior_scale": s,
               "n_points": r["n_points"], "is_samples": r["is_samples"]}
        for c in COLUMNS:
            row[c] = r.get(c)
            lo, hi = r.get(f"{c}_ci") or (None, None)
            row[f"{c}_ci_lo"], row[f"{c}_ci_hi"] = lo, hi
        row["bound_checks"] = " | ".join(r.get("bound_checks", []))
        rows.append(row)
        print(f"s = {s}: nll {r['nll']:.3f}, lower_bound {r['lower_bound']:.3f}, nll_ba {r['nll_ba']:.3f}, "
              f"nll_ba_heldout {r.get('nll_ba_heldout', math.nan):.3f}, glossy_max_train "
              f"{r.get('glossy_max_train', math.nan):.3f}", flush=True)
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for c, style in (("nll", "o-"), ("nll_ba", "s-"), ("nll_ba_heldout", "^-"), ("lower_bound", "v--"),
                     ("true_nll", "k:")):
        if df[c].notna().any():
            a.plot(df["prior_scale"], df[c], style, label=c)
            if f"{c}_ci_lo" in df and df[f"{c}_ci_lo"].notna().any():
                a.fill_between(df["prior_scale"], df[f"{c}_ci_lo"], df[f"{c}_ci_hi"], alpha=0.15)
    a.set_xscale("log")
    a.set_xlabel("prior scale s (1: the trained prior)")
    a.set_ylabel("nats")
    a.legend(fontsize=8)
    for c in ("glossy_max", "glossy_max_train"):
        b.plot(df["prior_scale"], df[c], "o-", label=c)
        b.fill_between(df["prior_scale"], df[f"{c}_ci_lo"], df[f"{c}_ci_hi"], alpha=0.15)
    b.set_xscale("log")
    b.set_xlabel("prior scale s")
    b.legend(fontsize=8)
    fig.suptitle(f"{df['dataset'][0]} {df['model'][0]}: one likelihood, priors p(z / s) / s^d")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", action="store_true", help="train a quick VAE on the synthetic data first")
    src.add_argument("--run", help="a trained glossy run directory")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs-root", default="runs", help="where --synthetic trains its model")
    ap.add_argument("--is-samples", type=int, default=1000)
    ap.add_argument("--max-points", type=int, default=None, help="test images (a seeded subset; default: all)")
    ap.add_argument("--max-candidates", type=int, default=None, help="training candidates (default: all)")
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--results", default="results")
    a = ap.parse_args()
    run = quick_synthetic_run(Path(a.runs_root)) if a.synthetic else Path(a.run)
    settings = EvalSettings(is_samples=a.is_samples, candidates=["test", "train"], heldout=True,
                            max_points=a.max_points, max_candidates=a.max_candidates)
    df = study(run, a.data_dir, a.scales, settings)
    out = Path(a.results) / f"mismatch_{df['dataset'][0]}.csv"
    with open(out, "w") as f:
        f.write(f"# python scripts/mismatch_study.py {' '.join(sys.argv[1:])}; torch {torch.__version__}\n")
        df.to_csv(f, index=False)
    figure(df, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
