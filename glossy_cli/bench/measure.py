"""Timing, the matrix-product peak and multiply-add counts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats: int, device: torch.device, warmup=None) -> float:
    """The fastest of `repeats` runs of fn() in seconds (after `warmup()` once, when given): on a shared
    machine the minimum is the run least disturbed by other processes."""
    if warmup is not None:
        warmup()
        _sync(device)
    best = math.inf
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n fp32 matrix product, best of `repeats`."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    c = torch.empty(n, n, device=device)
    t = best_time(lambda: torch.mm(a, b, out=c), repeats, device, warmup=lambda: torch.mm(a, b, out=c))
    return 2 * n**3 / t / 1e9


def count_macs(model: nn.Module, fn) -> int:
    """Multiply-adds of the nn.Linear and nn.Conv2d layers that fn() runs (dense, masks included)."""
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features
        else:
            total += out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total


def _vamp_macs(model) -> int:
    """Multiply-adds per sample of the VampPrior's matrix form ([z^2, z] @ W, W [2 dim, K]), 0 otherwise."""
    prior = getattr(model, "prior", None)
    return 2 * prior.dim * prior.n_components if hasattr(prior, "n_components") else 0


@dataclass
class Costs:
    point: int  # encoder work once per data point (q(z|x) / q(z2|x) and the x-part of q(z1|x, z2))
    sample: int  # per importance sample: decoder (p(x|z), p(z1|z2)), q(z1|x, z2), the prior's product
    decoder: int  # the likelihood network alone (one candidate of the glossy matrix)
    prior: int  # log p(z) per sample: p(z1|z2) of two-level models, the VampPrior's product
    train_image: int  # one training example's forward pass (elbo)


@torch.no_grad()
def model_costs(model, device: torch.device) -> Costs:
    x1 = torch.bernoulli(torch.full((1, *model.input_shape), 0.5)).to(device)
    with model.frozen():
        c1 = count_macs(model, lambda: model.sample_posterior(x1, 1))
        c2 = count_macs(model, lambda: model.sample_posterior(x1, 2))
        z = model.sample_posterior(x1, 1)[0]
        dec = count_macs(model, lambda: model.log_likelihood(x1, z))
        prior = count_macs(model, lambda: model.log_prior(z)) + _vamp_macs(model)
        train = count_macs(model, lambda: model.elbo(x1.expand(2, *model.input_shape), 1.0)) // 2
    per_sample_enc = c2 - c1
    return Costs(point=c1 - per_sample_enc, sample=per_sample_enc + dec + prior, decoder=dec, prior=prior,
                 train_image=train)


def _pseudo_macs(model) -> int:
    """Multiply-adds of encoding the VampPrior's K pseudo-inputs (done once per call by the reference)."""
    prior = getattr(model, "prior", None)
    if not hasattr(prior, "pseudo_images"):
        return 0
    with torch.no_grad():
        return count_macs(model, lambda: prior._encoder(prior.pseudo_images()))
