"""How far the VampPrior's one-product log-density is from float64, and what the refinement costs.

For each run given (a run directory with best.pt and a VampPrior), z is drawn from q(z|x) on 500 test images
and prior.log_prob(z) is compared with the mixture density computed componentwise in float64; then the
same at the encoder's log-variance clamps (-6, +2) with synthetic components (means ~ N(0, 3^2)). Last,
log_prob's time for 5000 z (K = 500, one thread) with VampPrior.REFINED = 0, 1 and 8.

    python scripts/vampprior_precision.py [--data-dir D] RUN ...
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from omegaconf import OmegaConf

from glossy_cli.runs import load_data, model_from_checkpoint, read_checkpoint
from glossy_models.priors import VampPrior


def float64_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    d = z.double().unsqueeze(1) - mean.double()
    lv = logvar.double()
    lp = -0.5 * (mean.shape[1] * math.log(2 * math.pi) + lv.sum(-1) + (d * d / lv.exp()).sum(-1))
    return torch.logsumexp(lp, -1) - math.log(mean.shape[0])


def error_on_run(run: str, data_dir: str | None, refined: int) -> float:
    ck = read_checkpoint(f"{run}/best.pt")
    cfg = OmegaConf.create(ck["config"])
    if data_dir:
        cfg.data_dir = data_dir
    model = model_from_checkpoint(ck, run).eval()
    x = load_data(cfg).test[:500]
    torch.manual_seed(0)
    with torch.no_grad(), model.frozen():
        prior = model.prior
        prior.REFINED = refined
        mean, logvar = prior.components()
        qm, qlv = model.q_z2(x) if hasattr(model, "q_z2") else model.q_z(x)
        z = qm + torch.randn_like(qm) * (0.5 * qlv).exp()
        return (prior.log_prob(z).double() - float64_density(z, mean, logvar)).abs().max().item()


def synthetic_prior(logvar: float, k: int = 500, dim: int = 40) -> tuple[VampPrior, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(k, dim, generator=gen) * 3
    logvars = torch.full((k, dim), logvar)
    prior = VampPrior(dim, lambda u: (means, logvars), (1, 2, 2), n_components=k, init_mean=0.5, init_std=0.3)
    z = means[torch.randint(k, (2000,), generator=gen)] + torch.randn(2000, dim, generator=gen) * math.exp(logvar / 2)
    return prior, z


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("runs", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for run in a.runs:
        errs = {r: error_on_run(run, a.data_dir, r) for r in (0, 1, 8)}
        print(f"{run}: max |log p - float64| by REFINED: " + ", ".join(f"{r}: {e:.2e}" for r, e in errs.items()))
    for lv in (-6.0, 2.0):
        prior, z = synthetic_prior(lv)
        with torch.no_grad():
            errs = {}
            for r in (0, 1, 8):
                prior.REFINED = r
                errs[r] = (prior.log_prob(z).double() - float64_density(z, *prior.components())).abs().max().item()
        print(f"logvar {lv:+.0f} (means ~ N(0, 9)): " + ", ".join(f"{r}: {e:.2e}" for r, e in errs.items()))
    prior, _ = synthetic_prior(-1.0)
    z = torch.randn(5000, 40)
    best = {}
    with torch.no_grad(), prior.frozen():
        for _ in range(3):
            for r in (0, 1, 8):
                prior.REFINED = r
                t = time.perf_counter()
                for _ in range(10):
                    prior.log_prob(z)
                best[r] = min(best.get(r, math.inf), (time.perf_counter() - t) / 10)
    print(f"log_prob of 5000 z, K = 500, 1 thread (torch {torch.__version__}): " +
          ", ".join(f"REFINED={r}: {t * 1e3:.1f} ms ({t / best[0]:.2f}x)" for r, t in best.items()))


if __name__ == "__main__":
    main()
