"""Where a held-out fit's working-set solve spends its time: each restricted solve (atoms in S, support before and
after, quadratic steps, seconds) and the whole fit, on the bench's generated problem (`best_prior_heldout`:
Gaussian likelihoods, 50001 atoms x 10^4 points, 1.76 GiB budget) or on a saved [M, N] matrix whose last row is
the model's prior (a .pt holding the tensor, or a dict with it under "aug"). docs/performance.md, "The best priors
by a working set".

    python scripts/working_set_profile.py [--matrix saved.pt] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import glossy.working_set as ws


def generated(m: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z, x = torch.randn(m, 8, generator=g), torch.randn(n, 8, generator=g) * 1.2
    L = torch.empty(m, n)
    for i in range(0, m, 4096):
        L[i : i + 4096] = -0.5 * torch.cdist(z[i : i + 4096], x) ** 2
    return L


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", help="a saved matrix (default: the bench's generated problem)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.matrix:
        d = torch.load(a.matrix)
        L = d["aug"] if isinstance(d, dict) else d
    else:
        L = generated(50001, 10000)
    m = L.shape[0]
    lw0 = torch.full((m,), -math.log(2 * (m - 1)), dtype=torch.float64)
    lw0[-1] = -math.log(2)
    solves = []
    restricted = ws._restricted

    def timed(E, x, max_iter):
        t0 = time.perf_counter()
        out = restricted(E, x, max_iter)
        solves.append((E.shape[0], int((x > 0).sum()), int((out[0] > 0).sum()), out[1], time.perf_counter() - t0))
        return out

    ws._restricted = timed
    t0 = time.perf_counter()
    r = ws.fit(L, lw0, 500, 1e-4, int(1.76 * 2**30), m - 1)
    total = time.perf_counter() - t0
    if r is None:
        raise SystemExit("the working set did not fit the budget (Blahut-Arimoto would run)")
    for k, before, after, steps, sec in solves:
        print(f"S {k:5d} atoms, support {before:4d} -> {after:4d}, {steps:3d} steps, {sec:.3f} s")
    _, nll, gap, passes, converged, _ = r
    print(f"restricted solves {sum(s[-1] for s in solves):.2f} s of {total:.2f} s; {passes} pricing passes, nll "
          f"{nll:.8f}, gap {gap:.1e}, converged {converged}; {m} x {L.shape[1]}, {a.threads} threads, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
