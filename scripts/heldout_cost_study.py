"""What the held-out fit's cost buys: nll_ba_heldout and its interval against the number of validation images the
prior is fitted on and their importance samples (eval.heldout_fit_points, eval.heldout_is_samples), on a trained run.
The test images' own log p(x) is importance-sampled once per setting with the same draws (eval.seed), so the
settings differ only in the fit. Writes results/heldout_cost_<dataset>.csv.

    python scripts/heldout_cost_study.py ~/glossy-study/caltech101-vae-standard-seed0 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from glossy.evaluation import evaluate
from glossy.settings import EvalSettings
from glossy_cli.eval_cmd import candidate_images
from glossy_cli.runs import load_trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--is-samples", type=int, default=1000, help="S of the test images (the same for every row)")
    ap.add_argument("--fit-samples", type=int, nargs="+", default=[500, 1000, 5000])
    ap.add_argument("--fit-points", type=int, nargs="+", default=[500, 1000, 0], help="0: all validation images")
    ap.add_argument("--results", default="results")
    a = ap.parse_args()
    cfg, splits, model = load_trained(a.run, a.data_dir)
    rows = []
    for s_fit in a.fit_samples:
        for n_fit in a.fit_points:
            st = EvalSettings(is_samples=a.is_samples, candidates=["train"], heldout=True,
                              heldout_fit_points=n_fit or len(splits.val), heldout_is_samples=s_fit)
            t0 = time.perf_counter()
            r = evaluate(model.eval(), splits.test, st, show_progress=False, **candidate_images(splits, st.seed))
            lo, hi = r["nll_ba_heldout_ci"]
            rows.append({"fit_points": r["n_heldout_fit"], "fit_is_samples": s_fit, "nll": r["nll"],
                         "nll_ba_heldout": r["nll_ba_heldout"], "ci_lo": lo, "ci_hi": hi, "half_width": (hi - lo) / 2,
                         "fit_nll": r["ba_heldout_fit_nll"], "prior_weight": r["ba_heldout_prior_weight"],
                         "fit_importance_sampling_s": r["timing_s"].get("heldout_importance_sampling"),
                         "heldout_ba_s": r["timing_s"].get("heldout_ba"), "wall_s": time.perf_counter() - t0,
                         "fit_decoder_passes": r["n_heldout_fit"] * s_fit})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    ref = df.sort_values(["fit_points", "fit_is_samples"]).iloc[-1]  # every validation image at the largest S
    df["moves_by"] = df["nll_ba_heldout"] - ref["nll_ba_heldout"]
    df["within_half_width"] = df["moves_by"].abs() < ref["half_width"]
    out = Path(a.results) / f"heldout_cost_{splits.meta.name}.csv"
    with open(out, "w") as f:
        f.write(f"# python scripts/heldout_cost_study.py {' '.join(sys.argv[1:])}; torch {torch.__version__}; "
                f"{cfg.dataset.name} {cfg.model.name} {cfg.prior.name}\n")
        df.to_csv(f, index=False)
    print(df.to_string())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
