"""How fast does Blahut-Arimoto fit the held-out prior, and does the active-set fit give the same answer?

Builds the held-out fit's augmented matrix of a trained run exactly as `glossy eval` does (atoms: the
posterior means of the training images; data: the validation images; last row: the model's prior,
log p^(x) of the validation images importance-sampled here with --samples), caches it (float32, about
2 GiB for MNIST), then times the held-out fit (`bounds.prior_fit_augmented`, as glossy eval runs it) with
the active set off and on, at each thread count,
and prints the fitted NLL, the certified gap, the iterations and the seconds of each, with ratios.

    python scripts/ba_speed.py RUN [--data-dir D] [--samples S] [--cache F] [--threads 1,2] [--tol 1e-4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from glossy_cli import bounds
from glossy_cli.candidates import likelihood_matrix, posterior_means
from glossy_cli.evaluation import candidate_images
from glossy_cli.importance import importance_sampling
from glossy_cli.main import flush_denormals
from glossy_cli.memory import Plan
from glossy_cli.runs import load_trained


@torch.no_grad()
def heldout_matrix(run: Path, data_dir: str | None, samples: int, seed: int = 0) -> torch.Tensor:
    _, splits, model = load_trained(run, data_dir)
    imgs = candidate_images(splits, seed)
    fit, atoms_x = imgs["valid_x"], imgs["train_x"]
    cpu = torch.device("cpu")
    with model.frozen():
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        lpx, _ = importance_sampling(model, fit, samples, Plan(1, samples, 1, 1), cpu)
        print(f"importance sampling of {len(fit)} validation images at S = {samples}: "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        za = posterior_means(model, atoms_x, cpu)
        aug = torch.empty(len(za) + 1, len(fit), dtype=torch.float32)
        t0 = time.perf_counter()
        likelihood_matrix(model, fit, za, Plan(1, 1, 2000, len(fit)), cpu, out=aug[:-1])
        print(f"matrix {len(za)} x {len(fit)}: {time.perf_counter() - t0:.1f} s", flush=True)
        aug[-1] = lpx
    return aug


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data-dir")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=500)
    a = ap.parse_args(argv)
    flush_denormals()  # the numerics `glossy eval` runs with
    cache = a.cache or Path("/tmp") / f"ba_speed_{a.run.resolve().name}_S{a.samples}.pt"
    if cache.is_file():
        aug = torch.load(cache, weights_only=True)
        print(f"held-out matrix from {cache}")
    else:
        aug = heldout_matrix(a.run, a.data_dir, a.samples)
        torch.save(aug, cache)
    print(f"augmented matrix {tuple(aug.shape)}, storage {bounds.ba_storage(*aug.shape, 2 * 2**30)}; "
          f"torch {torch.__version__}")
    print("| threads | active set | iterations | converged | fit NLL | gap | seconds | vs off |")
    print("|---|---|---|---|---|---|---|---|")
    for t in [int(s) for s in a.threads.split(",")]:
        torch.set_num_threads(t)
        base = None
        for active in (False, True):
            t0 = time.perf_counter()
            r = bounds.prior_fit_augmented(aug, max_iter=a.max_iter, tol=a.tol, active_set=active)
            dt = time.perf_counter() - t0
            base = base or dt
            print(f"| {t} | {'on' if active else 'off'} | {r['iterations']} | {r['converged']} | "
                  f"{r['fit_nll']:.6f} | {r['fit_gap']:.2e} | {dt:.1f} | {base / dt:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
