"""Seconds an image of importance sampling with the logistic-256 decoder, at several decoder block sizes, beside
the decoder's matrix-product floor at the matmul peak of the same run (docs/performance.md, "Importance sampling
with the logistic-256 decoder"): an untrained CIFAR-10 VAE, S = 5000 samples of one image, one thread.

    OMP_NUM_THREADS=1 python scripts/logistic_is_speed.py
"""

from __future__ import annotations

import torch

from glossy.importance import _block_log_weights
from glossy_cli.bench.measure import best_time
from glossy_models.registry import build

CPU = torch.device("cpu")


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = build("vae", "standard", (3, 32, 32), "continuous", z_dim=40, hidden=300).eval()
    x = (torch.randint(0, 256, (1, 3, 32, 32)).float() + 0.5) / 256
    s = 5000
    a = torch.randn(2000, 2000)
    peak = 2 * 2000**3 / best_time(lambda: a @ a, 3, CPU) / 1e9
    floor = 2 * m.decoder_macs() * s / 1e9 / peak
    with torch.no_grad():
        z, lq = m.sample_posterior(x, s)
        for block in (16, 32, 64, 128, 256, 500, 1000):
            t = best_time(lambda block=block: _block_log_weights(m, x, z, lq, block), 3, CPU)
            print(f"block {block:5d}: {t:.3f} s an image ({100 * floor / t:.0f}% of the floor)")
    print(f"floor {floor:.3f} s at the matmul peak {peak:.0f} GFLOP/s; torch {torch.__version__}")


if __name__ == "__main__":
    main()
