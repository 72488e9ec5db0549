"""The naive baselines (the reference's strategy), and training steps as `glossy train` runs them."""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch

from glossy_models.priors import log_normal_diag

from ..train import EpochPlan, elbo_step, train_one_epoch
from .measure import _sync


def _componentwise_log_prob(prior, z: torch.Tensor) -> torch.Tensor:
    """The VampPrior density as the reference computes it: every component's log-density over [..., K, dim]."""
    mean, logvar = prior.components()
    return torch.logsumexp(log_normal_diag(z.unsqueeze(-2), mean, logvar), -1) - math.log(prior.n_components)


@contextlib.contextmanager
def reference_prior(model):
    """The prior as the reference evaluates it: a VampPrior's mixture element-wise ([B, K, dim]), its
    pseudo-inputs re-encoded at every call (no frozen cache). Other priors are left alone."""
    prior = getattr(model, "prior", None)
    if prior is None or not hasattr(prior, "components"):
        yield
        return
    prior.log_prob = lambda z: _componentwise_log_prob(prior, z)  # instance attribute shadows the matrix form
    try:
        yield
    finally:
        del prior.log_prob


def _loader(x: torch.Tensor, batch: int, shuffle: bool = False, seed: int = 0):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(x), batch_size=batch, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


@torch.no_grad()
def naive_importance_sampling(model, x: torch.Tensor, n_samples: int, chunk: int, device) -> np.ndarray:
    """log p^(x_j) the reference's way: one test point at a time from a DataLoader; for every chunk of
    `chunk` samples the point is repeated, re-encoded, sampled, decoded; log-sum-exp in numpy float64."""
    from scipy.special import logsumexp

    model.eval()
    out = []
    with reference_prior(model):
        for (xb,) in _loader(x, 1):
            xb = xb.to(device)
            lw = []
            for s0 in range(0, n_samples, chunk):
                xr = xb.expand(min(chunk, n_samples - s0), *xb.shape[1:])
                z, log_q = model.sample_posterior(xr, 1)  # the encoder runs on every repeat
                lw.append((model.log_likelihood(xr, z) + model.log_prior(z) - log_q).cpu().numpy().ravel())
            out.append(logsumexp(np.concatenate(lw).astype(np.float64)) - math.log(n_samples))
    return np.asarray(out)


@torch.no_grad()
def naive_likelihood_matrix(model, x: torch.Tensor, z: torch.Tensor, chunk: int, device) -> torch.Tensor:
    """L[i, j] pair by pair through the model's per-pair API: one candidate at a time, the data from a
    DataLoader in batches of `chunk`, the candidate repeated (and so decoded) for every data point."""
    model.eval()
    rows = []
    for i in range(z.shape[0]):
        row = []
        for (xb,) in _loader(x, chunk):
            xb = xb.to(device)
            zi = z[i].to(device).expand(1, xb.shape[0], z.shape[1])
            row.append(model.log_likelihood(xb, zi)[0].cpu())
        rows.append(torch.cat(row))
    return torch.stack(rows)


def train_steps(model, x: torch.Tensor, batch: int, steps: int, device, naive: bool, seed: int = 0,
                fused: bool = False) -> float:
    """Seconds for `steps` full optimiser steps (Adam, loss = -ELBO at beta 1, dynamic binarisation).
    naive: a DataLoader over a TensorDataset (per-item collation), each batch copied to the device,
    the loss read back to the host after every step (the reference's `loss.data[0]`).
    fast: what glossy train runs (train.train_one_epoch): the data as one tensor on the device, indexed per batch
    through a permutation, binarised on the device, the loss terms summed on the device, one sync an epoch.
    fused: the fast path with torch's fused Adam kernel (one pass over all parameters).
    A model of grey levels (the logistic decoder) takes the images as they are."""
    binarize = model.input_type == "binary"
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, **({"fused": True} if fused else {}))
    _sync(device)
    t0 = time.perf_counter()
    if naive:
        _naive_steps(model, opt, x, batch, steps, device, seed, binarize)
    else:
        xd = x.to(device)
        plan = EpochPlan(model, opt, elbo_step(model), xd, batch, 0, torch.Generator().manual_seed(seed),
                         dynamic_binarization=binarize)
        done = 0
        while done < steps:  # epochs of at most the batches the data holds
            plan.n_batches = min(steps - done, max(1, len(xd) // batch))
            train_one_epoch(plan, 1.0)
            done += plan.n_batches
    _sync(device)
    return time.perf_counter() - t0


def _naive_steps(model, opt, x: torch.Tensor, batch: int, steps: int, device, seed: int,
                 binarize: bool = True) -> None:
    done, total = 0, 0.0
    while done < steps:
        for (xb,) in _loader(x, batch, shuffle=True, seed=seed):
            xb = torch.bernoulli(xb.to(device)) if binarize else xb.to(device)
            opt.zero_grad()
            loss = model.elbo(xb, 1.0)["loss"].mean()
            loss.backward()
            opt.step()
            total += loss.item()
            done += 1
            if done == steps:
                return
