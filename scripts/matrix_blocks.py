"""Do the glossy matrix's block sizes matter on this machine? A measurement, not a test.

The Bernoulli matrix is one matrix product per block of candidates (logits [rows, D] @ x^T [D, N]), so its
block is the candidate rows the memory budget allows; the logistic-256 matrix gathers from cache-sized bin
tables of PAIRWISE_PIXELS pixels x 256 bins x PAIRWISE_CANDIDATES candidates (models/likelihoods.py).
This times both over a grid of block sizes at one thread on data of MNIST's shape and prints the time of
each relative to the fastest, so that a constant tuned elsewhere can be judged here.

    python scripts/matrix_blocks.py [--n 2000] [--m 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from glossy_cli.candidates import likelihood_matrix
from glossy_cli.main import flush_denormals
from glossy_cli.memory import Plan
from glossy_models import likelihoods
from glossy_models.registry import build


def best_of(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--m", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    flush_denormals()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {a.threads} thread(s), M = {a.m} candidates, N = {a.n} images of 28 x 28")

    xb = torch.bernoulli(torch.full((a.n, 1, 28, 28), 0.3))
    vae = build("vae", "standard", (1, 28, 28), "binary").eval()
    z = torch.randn(a.m, vae.latent_dim)
    rows = [16, 64, 256, a.m]
    times = {r: best_of(lambda r=r: likelihood_matrix(vae, xb, z, Plan(1, 1, r, a.n), cpu)) for r in rows}
    fastest = min(times.values())
    print("\nBernoulli: candidate rows per block | seconds | vs fastest")
    for r, t in times.items():
        print(f"  {r:5d} | {t:.3f} | {t / fastest:.2f}x")

    xg = torch.rand(a.n, 1, 28, 28)
    gvae = build("vae", "standard", (1, 28, 28), "gray").eval()
    zg = torch.randn(a.m // 4, gvae.latent_dim)
    grid = [(c, p) for c in (32, 64, 128, 256) for p in (4, 8, 16, 32)]
    saved = likelihoods.PAIRWISE_CANDIDATES, likelihoods.PAIRWISE_PIXELS
    times = {}
    try:
        for c, p in grid:
            likelihoods.PAIRWISE_CANDIDATES, likelihoods.PAIRWISE_PIXELS = c, p
            times[(c, p)] = best_of(lambda: likelihood_matrix(gvae, xg, zg, Plan(1, 1, len(zg), a.n), cpu), 2)
    finally:
        likelihoods.PAIRWISE_CANDIDATES, likelihoods.PAIRWISE_PIXELS = saved
    fastest = min(times.values())
    pairs = len(zg) * a.n * 784
    print(f"\nlogistic-256 (M = {len(zg)}): candidates x pixels per table | ns per (pair, pixel) | vs fastest"
          f"   (in use: {saved[0]} x {saved[1]})")
    for (c, p), t in sorted(times.items(), key=lambda kv: kv[1]):
        print(f"  {c:4d} x {p:3d} | {1e9 * t / pairs:.3f} | {t / fastest:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
