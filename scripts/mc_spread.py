"""The Monte Carlo spread of a run's evaluation (issue 23, item 2): the same checkpoint, data and eval settings
as its result.json, evaluated again with other eval.seed values (other candidate draws, importance samples and,
for dynamically binarised data, another binarisation of the training images). Writes RUN/mc_spread.json: every
statistic at each eval seed (the result's own seed included) and its sd over them; `glossy table` reports the
sd as the row's `*_mc_sd` columns. Resumable: a seed already in mc_spread.json is not evaluated again.

    python scripts/mc_spread.py RUN_DIR [RUN_DIR ...] --eval-seeds 1235 1236 [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

from glossy.atomic import atomic_write_json
from glossy.evaluation import evaluate
from glossy.settings import EvalSettings
from glossy_cli.eval_cmd import candidate_images
from glossy_cli.runs import load_trained

STATS = ["nll", "glossy_max", "glossy_std", "lower_bound", "glossy_max_train", "glossy_std_train",
         "bound_train_atoms", "nll_ba", "nll_ba_heldout"]
MC_FILE = "mc_spread.json"


def spread(run: Path, eval_seeds: list[int], data_dir: str | None, device: str) -> dict:
    record = json.loads((run / "result.json").read_text())
    path = run / MC_FILE
    mc = json.loads(path.read_text()) if path.is_file() else {}
    ecfg = dict(record["eval_config"])
    base = {k: v for k, v in ecfg.items() if k not in ("seed", "bootstrap", "bootstrap_level")}
    if mc and mc.get("eval_config") != base:
        raise SystemExit(f"{path}: made with other eval settings than {run}/result.json; remove it to start again")
    per_seed = mc.get("per_seed", {})
    per_seed.setdefault(str(ecfg["seed"]), {k: record[k] for k in STATS if k in record})
    todo = [s for s in eval_seeds if str(s) not in per_seed]
    if todo:
        cfg, splits, model = load_trained(run, data_dir)
        model = model.to(device)
        x = {"test": splits.test, "val": splits.val, "train": splits.train}[ecfg["split"]]
        for s in todo:
            settings = EvalSettings(**{**base, "seed": s, "jackknife": 0,
                                       "heldout": bool(ecfg["heldout"]) and ecfg["split"] == "test"})
            res = evaluate(model, x, settings, true_model=splits.meta.true_model, device=device, show_progress="log",
                           **candidate_images(splits, s))
            per_seed[str(s)] = {k: res[k] for k in STATS if k in res}
            out = {"run": str(run), "eval_config": base, "per_seed": per_seed}
            atomic_write_json(path, {**out, "sd": _sd(per_seed)})  # after every seed: a cut-off run resumes
    out = {"run": str(run), "eval_config": base, "per_seed": per_seed, "sd": _sd(per_seed)}
    atomic_write_json(path, out)
    return out


def _sd(per_seed: dict) -> dict:
    keys = set.intersection(*(set(v) for v in per_seed.values()))
    return {k: statistics.stdev(v[k] for v in per_seed.values()) for k in sorted(keys) if len(per_seed) > 1}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[1235, 1236])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for run in args.runs:
        out = spread(Path(run), args.eval_seeds, args.data_dir, args.device)
        print(run, " ".join(f"{k} {v:.3g}" for k, v in out["sd"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
