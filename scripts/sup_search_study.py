"""How far the candidate max of log c is from the sup that gradient ascent finds, on a trained run: its test
images' importance-sampled log p(x) and candidates as `glossy eval` makes them, then the search (glossy.search)
from the best candidates at several step counts. Writes results/sup_search_<dataset>.json.

    python scripts/sup_search_study.py ~/glossy-study/caltech101-vae-standard-seed0 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from glossy.evaluation import evaluate
from glossy.settings import EvalSettings
from glossy_cli.runs import load_trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--is-samples", type=int, default=5000)
    ap.add_argument("--steps", type=int, nargs="+", default=[300], help="each a whole evaluation (same draws)")
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--results", default="results")
    a = ap.parse_args()
    cfg, splits, model = load_trained(a.run, a.data_dir)
    rows = []
    for steps in a.steps:
        t0 = time.perf_counter()
        s = EvalSettings(is_samples=a.is_samples, candidates=["test"], heldout=False, sup_search_steps=steps,
                         sup_search_starts=a.starts)
        r = evaluate(model.eval(), splits.test, s, show_progress=False)
        rows.append({"steps": steps, "starts": a.starts, "nll": r["nll"], "glossy_max": r["glossy_max"],
                     "lower_bound": r["lower_bound"], "glossy_max_searched": r.get("glossy_max_searched"),
                     "lower_bound_searched": r.get("lower_bound_searched"), "nll_ba": r["nll_ba"],
                     "gain": (r.get("sup_search") or {}).get("gain", 0.0), "bound_checks": r["bound_checks"],
                     "search_s": r["timing_s"].get("sup_search"), "wall_s": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(a.results) / f"sup_search_{splits.meta.name}.json"
    out.write_text(json.dumps({"run": str(a.run), "dataset": splits.meta.name, "model": cfg.model.name,
                               "prior": cfg.prior.name, "is_samples": a.is_samples, "torch": str(torch.__version__),
                               "command": f"python scripts/sup_search_study.py {a.run} --is-samples {a.is_samples}",
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
