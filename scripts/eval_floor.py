"""How near its floor a `glossy eval` ran: every decoder pass and likelihood-matrix product the evaluation needs, at
the matmul peak measured in the same command (before and after the evaluation, the higher of the two), against
the evaluation's own wall time and stages (result.json's `timing_s`).

    python scripts/eval_floor.py <run_dir> [glossy eval overrides ...]   # evaluates <run_dir>'s best.pt again
    python scripts/eval_floor.py <run_dir> --no-eval                     # its result.json as it is, peak now

The floor counts, in multiply-adds: the decoder's (model.decoder_macs()) for every importance sample (S for each
evaluated point and each validation image of the held-out fit) and every candidate's decoder pass; and D per
(candidate, point) pair of each glossy matrix (test candidates x N, training candidates x N, held-out atoms x fit
images), D the image's size: the Bernoulli matrix is exactly that one matrix product (the logistic one is more).
Encoder passes (one per point and candidate) are left out: under 1% here. Run it with nothing else on the machine
(the long runs SIGSTOPped: scripts/eval_compare.sh shows how); the thread count is torch's (OMP_NUM_THREADS).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from glossy_cli.bench.measure import matmul_peak
from glossy_cli.runs import find_checkpoint, model_from_checkpoint, read_checkpoint


def floor_macs(result: dict, decoder_macs: int, d: int) -> dict[str, float]:
    """Multiply-adds of each stage's decoder passes and matrix products, from a result.json."""
    n, s = result["n_points"], result["is_samples"]
    m_test, m_train = result.get("n_candidates_test", 0), result.get("n_candidates_train", 0)
    n_fit, m_atoms = result.get("n_heldout_fit", 0), result.get("n_heldout_atoms", 0)
    s_fit = (result.get("stamp", {}).get("heldout") or {}).get("is_samples", s)
    return {"importance_sampling": decoder_macs * n * s,
            "heldout_importance_sampling": decoder_macs * n_fit * s_fit,
            "test_candidates": (decoder_macs + d * n) * m_test,
            "heldout_matrix": (decoder_macs + d * n_fit) * m_atoms,
            "train_candidates": (decoder_macs + d * n) * m_train if m_train else 0}


def main(argv: list[str]) -> int:
    if not argv:
        sys.exit(__doc__)
    run = Path(argv[0]).expanduser()
    path = find_checkpoint(str(run))
    threads = torch.get_num_threads()
    cpu = torch.device("cpu")
    peaks = [matmul_peak(cpu)]
    if "--no-eval" not in argv:
        glossy = Path(sys.executable).parent / "glossy"
        p = subprocess.run([str(glossy), "eval", f"checkpoint={path}", *argv[1:]])
        if p.returncode:
            return p.returncode
        peaks.append(matmul_peak(cpu))
    result = json.loads((path.parent / "result.json").read_text())
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path)
    macs = floor_macs(result, model.decoder_macs(), math.prod(model.input_shape))
    peak = max(peaks)
    t = result["timing_s"]
    total_floor = 2 * sum(macs.values()) / (peak * 1e9)
    print(f"torch {torch.__version__}, {threads} threads, matmul peak {', '.join(f'{p:.0f}' for p in peaks)} "
          f"GFLOP/s (using {peak:.0f})")
    print(f"{'stage':30s} {'seconds':>9s} {'floor s':>9s} {'share':>7s}")
    for k, v in macs.items():
        if k in t and v:
            f = 2 * v / (peak * 1e9)
            print(f"{k:30s} {t[k]:9.1f} {f:9.2f} {100 * f / t[k]:6.0f}%")
    print(f"{'total':30s} {t['total']:9.1f} {total_floor:9.2f} {100 * total_floor / t['total']:6.0f}%   "
          f"({2 * sum(macs.values()) / 1e9:.3g} GFLOP)")
    print("stages: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    from glossy.errors import GlossyError

    try:
        sys.exit(main(sys.argv[1:]))
    except (GlossyError, FileNotFoundError, KeyError) as e:  # no run, no result.json, or one without its fields
        print(f"eval_floor: {e}", file=sys.stderr)
        sys.exit(2)
