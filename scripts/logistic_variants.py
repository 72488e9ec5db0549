"""Why does glossy std differ from the paper's on a discretised-logistic dataset? An experiment.

For a trained run with the 256-bin logistic likelihood (Frey Faces), recompute log c(z_i) over the
test set with three versions of the per-pixel log-likelihood, each used for both L[i, j] and the
importance-sampled log p(x_j), and print glossy max, std and std squared for each, with the share of
candidates whose log c is dominated by their own image and the spreads of log p(x_j) and L[i, i]:

  normalised   glossy's: the outer bins take the tails, so the 256 probabilities sum to one
  no tails     the bins [k/256, (k+1)/256] only, no tails (not normalised)
  reference    as the VampPrior reference code: no tails and +1e-7 inside the log

    python scripts/logistic_variants.py ~/glossy-runs/frey-vae-standard-seed0 [data_dir] [S]

It loads best.pt of the run, evaluates on the run's test split and writes nothing.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from glossy_cli.bounds import glossy_stats, log_c
from glossy_cli.runs import load_data, model_from_checkpoint, read_checkpoint

BINS = 256


def pixel_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, variant: str) -> torch.Tensor:
    """Per-pixel log P(bin of x) for broadcastable x, loc, log_scale."""
    k = torch.clamp(torch.floor(x * BINS), 0, BINS - 1)
    inv = torch.exp(-log_scale)
    lo = (k / BINS - loc) * inv
    hi = ((k + 1) / BINS - loc) * inv
    if variant == "reference":  # the reference's float32 arithmetic, floored by the 1e-7
        return torch.log(torch.sigmoid(hi) - torch.sigmoid(lo) + 1e-7)
    if variant == "normalised":
        lo = torch.where(k == 0, torch.full_like(lo, -1e4), lo)
        hi = torch.where(k == BINS - 1, torch.full_like(hi, 1e4), hi)
    # log(sigmoid(hi) - sigmoid(lo)), stable far from the mean, where the plain difference cancels to 0
    return F.logsigmoid(hi) - F.softplus(lo) + torch.log(-torch.expm1(lo - hi))


@torch.no_grad()
def stats(model, x: torch.Tensor, variant: str, n_samples: int, seed: int = 0) -> dict:
    xf = x.flatten(1)
    gen = torch.Generator().manual_seed(seed)
    log_px = torch.empty(len(x), dtype=torch.float64)
    for j in range(len(x)):  # one point at a time, S samples
        mean, logvar = model.q_z(x[j : j + 1])
        eps = torch.randn(n_samples, mean.shape[-1], generator=gen)
        z = mean + torch.exp(0.5 * logvar) * eps
        head = model.decode(z)
        ll = pixel_log_prob(xf[j], head.loc, head.log_scale, variant).sum(-1)
        log_q = (-0.5 * (eps**2 + logvar + math.log(2 * math.pi))).sum(-1)
        w = ll + model.log_prior(z) - log_q
        log_px[j] = (torch.logsumexp(w.double(), 0) - math.log(n_samples)).item()
    head = model.decode(model.posterior_mean(x))  # the candidates z_i = mean of q(z|x_i)
    L = torch.stack([pixel_log_prob(xf, head.loc[i], head.log_scale[i], variant).sum(-1) for i in range(len(x))])
    s = glossy_stats(log_c(L, log_px))
    ratio = L.double() - log_px  # [M, N]: log l(x_j|z_i) - log p(x_j)
    own = (ratio.argmax(1) == torch.arange(len(x))).double().mean().item()
    return {"nll": -log_px.mean().item(), **s, "std_squared": s["glossy_std"] ** 2, "own_image_share": own,
            "std_log_px": log_px.std().item(), "std_diag_L": L.diag().double().std().item()}


def main() -> None:
    run = Path(sys.argv[1]).expanduser()
    data_dir = sys.argv[2] if len(sys.argv) > 2 else "../shared/data"
    n_samples = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    ckpt = read_checkpoint(run / "best.pt")
    cfg = OmegaConf.create(ckpt["config"])
    cfg.data_dir = data_dir
    splits = load_data(cfg)
    model = model_from_checkpoint(ckpt, run / "best.pt", splits.meta).eval()
    torch.set_grad_enabled(False)
    print(f"{run.name}: N={len(splits.test)} test points, S={n_samples}")
    print(f"{'variant':12s} {'NLL':>10s} {'glossy max':>11s} {'glossy std':>11s} {'std^2':>9s} "
          f"{'own image':>10s} {'std log p(x)':>13s} {'std L[i,i]':>11s}")
    for variant in ("normalised", "no tails", "reference"):
        r = stats(model, splits.test, variant, n_samples)
        print(f"{variant:12s} {r['nll']:10.2f} {r['glossy_max']:11.2f} {r['glossy_std']:11.2f} {r['std_squared']:9.1f} "
              f"{r['own_image_share']:10.1%} {r['std_log_px']:13.2f} {r['std_diag_L']:11.2f}")
    print("own image: share of candidates z_i whose largest term in log c(z_i) is their own image x_i")


if __name__ == "__main__":
    main()
