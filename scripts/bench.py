#!/usr/bin/env python
"""The benchmark: how close training, importance sampling and the glossy matrix run to the machine's
limits, measured in one run on the current device. Run it from a checkout with glossy installed:

    python scripts/bench.py [key=value ...]      e.g. quick=true, threads=1, e2e=false, device=cuda

(the settings and their defaults: BenchSettings below; the README's speed section says what each column
means and what the project aims for).

Per operation and model it records the achieved throughput, the floating-point floor of the operation
(from the layer sizes: multiply-adds counted with forward hooks on every nn.Linear / nn.Conv2d, two
flops each), the fraction of the matrix-product peak measured at the start of the same run (a large
fp32 matmul), and the speed-up over a naive baseline measured in the same run on the same model object:
the reference's strategy (one test point at a time, the encoder re-run for every chunk of samples,
data through a torch DataLoader, the VampPrior's mixture density element-wise with its pseudo-inputs
re-encoded at every call). The table goes to results/bench.csv and results/bench.md (atomically),
with the machine, torch, thread count, load average and date. It prints measurements and ratios only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from glossy_models.priors import log_normal_diag

log = logging.getLogger("glossy.bench")

SHAPE = (1, 28, 28)  # MNIST-shaped


@dataclass
class BenchSettings:
    quick: bool = False  # tiny sizes: every operation runs once (the test suite); not a measurement
    threads: int | None = None  # torch threads (null: torch's default)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    results_dir: str = "results"  # bench.csv and bench.md go here
    seed: int = 0
    repeats: int = 3  # each timing is the best of this many runs
    peak_n: int = 2048  # the peak: an n x n fp32 matrix product
    train_points: int = 2000  # training: optimiser steps on MNIST-shaped random binary images
    train_batch: int = 100
    train_steps: int = 20
    pixel_train_steps: int = 2
    is_points: int = 4  # importance sampling: S samples on is_points points (fast), naive_points (naive)
    is_samples: int = 5000
    pixel_is_points: int = 2
    pixel_is_samples: int = 100
    naive_points: int = 1
    naive_chunk: int = 100  # the reference's MB: samples per encoder + decoder call
    matrix_n: int = 4000  # the glossy matrix: M = N
    logistic_n: int = 2000
    naive_matrix_rows: int = 4
    e2e: bool = True  # end to end: evaluate() on one VAE in a fresh process
    e2e_points: int = 10000
    e2e_samples: int = 5000
    e2e_jackknife: int = 20
    interval_groups: int = 20  # the interval row: jackknife groups (eval.jackknife's default)
    notes: list[str] = field(default_factory=list)  # free-text lines appended to bench.md


AT_LEAST_ZERO = ("e2e_jackknife", "seed")  # every other integer setting is at least 1

# sizes of the quick mode (the test suite): every operation runs, on tiny inputs
QUICK_SIZES = {
    "repeats": 1, "peak_n": 256, "train_points": 64, "train_batch": 8, "train_steps": 2, "pixel_train_steps": 1,
    "is_points": 2, "is_samples": 20, "pixel_is_points": 1, "pixel_is_samples": 2, "naive_points": 1, "naive_chunk": 10,
    "matrix_n": 48, "naive_matrix_rows": 2, "logistic_n": 24, "e2e_points": 40, "e2e_samples": 10,
    "e2e_jackknife": 5, "interval_groups": 5, "e2e": True,
}


def parse_settings(args: list[str]) -> BenchSettings:
    """key=value arguments over BenchSettings' defaults; a bad key or value raises ValueError (one line)."""
    base = OmegaConf.structured(BenchSettings)
    names = [f.name for f in fields(BenchSettings)]
    for a in args:
        if "=" not in a or a.split("=", 1)[0] not in names:
            raise ValueError(f"{a}: expected key=value with key one of {', '.join(names)}")
        try:
            base.merge_with_dotlist([a])
        except Exception as e:  # OmegaConf's validation error: its first line
            raise ValueError(f"{a}: {str(e).splitlines()[0]}") from None
    st = BenchSettings(**OmegaConf.to_container(base))  # type: ignore[arg-type]
    if any(not isinstance(n, str) for n in st.notes):
        raise ValueError("notes: each note must be text; quote a note that holds a colon: "
                         "'notes=[\"quiet: ...\"]'")
    for f in fields(st):
        value, low = getattr(st, f.name), 0 if f.name in AT_LEAST_ZERO else 1
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise ValueError(f"{f.name}={value}: must be at least {low}")
    return st


# --- measuring ----------------------------------------------------------------------------------------
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


# --- the naive baselines (the reference's strategy) ------------------------------------------------------
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


def train_steps(model, x: torch.Tensor, batch: int, steps: int, device, naive: bool, dynamic_binarization=True,
                seed: int = 0, fused: bool = False) -> float:
    """Seconds for `steps` full optimiser steps (Adam, loss = -ELBO with warm-up beta 1).
    naive: a DataLoader over a TensorDataset (per-item collation), each batch copied to the device,
    the loss read back to the host after every step (the reference's `loss.data[0]`).
    fast (what glossy train does): the data as one tensor on the device, indexed per batch through a
    permutation, binarised on the device, the loss terms summed on the device without a sync.
    fused: the fast path with torch's fused Adam kernel (one pass over all parameters)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, **({"fused": True} if fused else {}))
    gen = torch.Generator().manual_seed(seed)
    _sync(device)
    t0 = time.perf_counter()
    if naive:
        done, total = 0, 0.0
        while done < steps:
            for (xb,) in _loader(x, batch, shuffle=True, seed=seed):
                xb = xb.to(device)
                if dynamic_binarization:
                    xb = torch.bernoulli(xb)
                opt.zero_grad()
                loss = model.elbo(xb, 1.0)["loss"].mean()
                loss.backward()
                opt.step()
                total += loss.item()
                done += 1
                if done == steps:
                    break
    else:
        xd = x.to(device)
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        n_batches = max(1, len(xd) // batch)
        perm = torch.randperm(len(xd), generator=gen).to(device)
        for b in range(steps):
            if b % n_batches == 0 and b:
                perm = torch.randperm(len(xd), generator=gen).to(device)
            k = b % n_batches
            xb = xd[perm[k * batch : (k + 1) * batch]]
            if dynamic_binarization:
                xb = torch.bernoulli(xb)
            opt.zero_grad(set_to_none=True)
            terms = model.elbo(xb, 1.0)
            loss = terms["loss"].mean()
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), terms["re"].mean().detach(), terms["kl"].mean().detach()]).double()
        sums.tolist()  # one sync at the end of the "epoch"
    _sync(device)
    return time.perf_counter() - t0


# --- the operations -------------------------------------------------------------------------------------
def _binary(n: int, seed: int, p: float = 0.3) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *SHAPE), p), generator=torch.Generator().manual_seed(seed))


def _gray(n: int, seed: int) -> torch.Tensor:
    """Every one of the 256 levels equally likely: the worst case for the logistic table's cache."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *SHAPE), generator=g).float() + 0.5) / 256


def _build(name: str, prior: str, input_type: str = "binary", seed: int = 0):
    from glossy_models import registry as models

    torch.manual_seed(seed)
    return models.build(name, prior, SHAPE, input_type)


def _row(op, model, prior, data, unit, items, seconds, flop_per_item, peak, baseline_items=None,
         baseline_seconds=None, note="", **extra) -> dict:
    thr = items / seconds
    gflops = thr * flop_per_item / 1e9
    r = {"operation": op, "model": model, "prior": prior, "data": data, "unit": unit,
         "throughput": thr, "seconds": seconds, "items": items, "floor_flop_per_item": flop_per_item,
         "floor_seconds": items * flop_per_item / (peak * 1e9), "gflops": gflops, "pct_of_peak": 100 * gflops / peak,
         "baseline_throughput": None, "speedup": None, "speedup_at_peak": None, "note": note}
    if baseline_items:
        r["baseline_throughput"] = baseline_items / baseline_seconds
        r["speedup"] = thr / r["baseline_throughput"]
        # the speed-up a run at 100% of the peak would have over this baseline: what any target can ask
        r["speedup_at_peak"] = (peak * 1e9 / flop_per_item) / r["baseline_throughput"]
    r.update(extra)
    return r


def bench_train(name, sz, device, peak, seed) -> dict:
    model = _build(name, "standard", seed=seed).to(device)
    x = _binary(sz["train_points"], seed)  # in [0, 1], binarised per batch (dynamic binarisation)
    steps = sz["pixel_train_steps"] if name == "pixelhvae" else sz["train_steps"]
    batch = sz["train_batch"]
    flop = 2 * 3 * model_costs(model, device).train_image  # forward + backward (2x forward) per image
    t_fast, t_naive, t_fused = math.inf, math.inf, math.inf
    for r in range(sz["repeats"]):  # interleaved, best of each
        t_fast = min(t_fast, train_steps(model, x, batch, steps, device, naive=False, seed=seed + r))
        t_naive = min(t_naive, train_steps(model, x, batch, steps, device, naive=True, seed=seed + r))
        t_fused = min(t_fused, train_steps(model, x, batch, steps, device, naive=False, seed=seed + r, fused=True))
    items = steps * batch
    return _row("train_step", name, "standard", "binary", "images/s", items, t_fast, flop, peak, items, t_naive,
                batch=batch, fused_adam_throughput=items / t_fused,
                note=f"batch {batch}, Adam as glossy train runs it; floor = 3 x forward (backward ~2x forward), "
                     f"Adam not counted; with torch.optim.Adam(fused=True) (not what glossy train uses) "
                     f"{items / t_fused:.4g} images/s ({t_naive / t_fused:.2f}x naive)")


def bench_is(name, prior, sz, device, peak, seed) -> dict:
    from glossy.importance import importance_sampling, is_block_bytes
    from glossy.memory import make_plan

    model = _build(name, prior, seed=seed).to(device).eval()
    s_fast = sz["pixel_is_samples"] if name == "pixelhvae" else sz["is_samples"]
    n_fast = sz["pixel_is_points"] if name == "pixelhvae" else sz["is_points"]
    x = _binary(max(n_fast, sz["naive_points"]), seed + 1)
    xf, xn = x[:n_fast], x[: sz["naive_points"]]
    costs = model_costs(model, device)
    flop = 2 * (costs.sample + costs.point / s_fast)
    plan = make_plan(model, len(xf), len(xf), s_fast, 4 * 2**30)
    chunk = min(sz["naive_chunk"], s_fast)

    def fast():
        with model.frozen():
            importance_sampling(model, xf, s_fast, plan, device)

    def naive():
        naive_importance_sampling(model, xn, s_fast, chunk, device)

    def warm():
        with model.frozen():
            importance_sampling(model, xf[:1], min(s_fast, 8), plan, device)

    t_fast = best_time(fast, sz["repeats"], device, warmup=warm)  # the warm-up calibrates the decoder block
    with model.frozen():
        block = is_block_bytes(model, device)
    t_naive = best_time(naive, max(1, sz["repeats"] - 1), device,
                        warmup=lambda: naive_importance_sampling(model, xn[:1], chunk, chunk, device))
    return _row("importance_sampling", name, prior, "binary", "samples/s", len(xf) * s_fast, t_fast, flop, peak,
                len(xn) * s_fast, t_naive, samples=s_fast, chunk=chunk, naive_flop_per_sample=2 * (
                    costs.sample + costs.point + (_pseudo_macs(model) / chunk)),
                block_samples=block // model.eval_bytes_per_sample(),
                note=f"S = {s_fast}, {len(xf)} points (plan: {plan.samples} samples per chunk; decoder blocks of "
                     f"{block // model.eval_bytes_per_sample()} samples, {block / 2**20:.1f} MiB, chosen at run time); "
                     f"naive: {len(xn)} point(s), chunks of {chunk}")


def _pseudo_macs(model) -> int:
    """Multiply-adds of encoding the VampPrior's K pseudo-inputs (done once per call by the reference)."""
    prior = getattr(model, "prior", None)
    if not hasattr(prior, "pseudo_images"):
        return 0
    with torch.no_grad():
        return count_macs(model, lambda: prior._encoder(prior.pseudo_images()))


def bench_matrix(input_type, sz, device, peak, seed) -> dict:
    from glossy.candidates import likelihood_matrix, posterior_means
    from glossy.memory import make_plan

    model = _build("vae", "standard", input_type, seed=seed).to(device).eval()
    n = sz["matrix_n"] if input_type == "binary" else sz["logistic_n"]
    x = _binary(n, seed + 2) if input_type == "binary" else _gray(n, seed + 2)
    d = math.prod(SHAPE)
    costs = model_costs(model, device)
    with model.frozen():
        z = posterior_means(model, x, device)
        plan = make_plan(model, n, n, 1, 4 * 2**30 - 4 * n * n)
        t_fast = best_time(lambda: likelihood_matrix(model, x, z, plan, device), sz["repeats"], device,
                           warmup=lambda: likelihood_matrix(model, x[:8], z[:8], plan, device))
        m_naive = min(n, sz["naive_matrix_rows"])
        t_naive = best_time(lambda: naive_likelihood_matrix(model, x, z[:m_naive], 100, device), 1, device)
    per_pair = 2 * d if input_type == "binary" else d  # Bernoulli: one multiply-add per pixel; logistic: one add
    flop = per_pair + 2 * costs.decoder / n
    kind = "Bernoulli: logits @ x^T (one addmm)" if input_type == "binary" else (
        f"logistic-256: no matrix-product form; cache-sized bin tables (257 softplus per candidate and pixel) "
        f"gathered and summed per (pair, pixel): {t_fast / (n * n * d) * 1e9:.2f} ns per (pair, pixel), "
        f"a gather-bound operation, so its fraction of the matmul peak is small by nature")
    return _row(f"glossy_matrix_{'bernoulli' if input_type == 'binary' else 'logistic'}", "vae", "standard",
                input_type, "pairs/s", n * n, t_fast, flop, peak, m_naive * n, t_naive,
                note=f"M = N = {n}; {kind}; naive: {m_naive} candidates, per-pair decoder calls in "
                     "DataLoader batches of 100")


def bench_intervals(sz, device, peak, seed) -> dict:
    """The interval stage of the in-sample source on an N x N matrix: the delete-a-group jackknife that glossy
    reports (eval.jackknife groups) against the percentile bootstrap it reported before (B = 100 resamples),
    the baseline; the note adds the pass that nll_ba_ci takes (the mixture at the fitted weights)."""
    from glossy import bounds, intervals

    n, groups = sz["matrix_n"], sz["interval_groups"]
    g = torch.Generator().manual_seed(seed)
    L = (torch.randn(n, n, generator=g) * 30 - 500).to(device)
    lpx = torch.logsumexp(L.double(), 0) - math.log(n)
    t_jack = best_time(lambda: intervals.jackknife(L, lpx, groups, seed), sz["repeats"], device)
    t_boot = best_time(lambda: intervals.bootstrap(L, lpx, 100, seed), sz["repeats"], device)
    log_w = torch.full((n,), -math.log(n), dtype=torch.float64)
    t_mix = best_time(lambda: bounds.mixture_log_marginal(L, log_w), sz["repeats"], device)
    flop = 2 * groups + 2  # per pair: exp(L - max) @ weights^T (groups columns), and the shift
    return _row("intervals_jackknife", "any", "any", "any", "pairs/s", n * n, t_jack, flop, peak, n * n, t_boot,
                note=f"M = N = {n}: jackknife with {groups} groups {t_jack:.3f} s against the percentile bootstrap "
                     f"(100 resamples, the baseline) {t_boot:.3f} s; nll_ba_ci's mixture pass {t_mix:.3f} s")


# --- end to end ------------------------------------------------------------------------------------------
def e2e_child(n: int, s: int, threads: int | None, device: str, jackknife: int = 20) -> dict:
    """`glossy eval` on one VAE in this (fresh) process: wall time, evaluate()'s own timings and the
    process's peak resident memory."""
    from glossy.evaluation import evaluate

    if threads:
        torch.set_num_threads(int(threads))
    model = _build("vae", "standard").to(device)
    x = _binary(n, 7, p=0.13)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    r = evaluate(model, x, is_samples=s, jackknife=jackknife, device=device, show_progress=False)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "timing_s": r["timing_s"], "nll": r["nll"], "glossy_max": r["glossy_max"],
            "ba_iterations": r.get("ba_iterations"), "plan": r["plan"],
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mib": rss0 / 1024}


def bench_e2e(sz, device, peak, threads, is_row: dict, matrix_row: dict) -> dict:
    """glossy eval's evaluate() on one VAE in a fresh process at `threads`, and the wall time that the
    importance-sampling and Bernoulli-matrix rows measured at the same thread count predict for it (IS:
    N x S samples; the test candidates' N x N matrix), with the relative error of that prediction."""
    n, s = int(sz["e2e_points"]), int(sz["e2e_samples"])
    n_full, s_full = 10000, 5000
    cmd = [sys.executable, str(Path(__file__).resolve()), "e2e-child", str(n), str(s), str(threads or 0), str(device),
           str(sz["e2e_jackknife"])]
    log.info("end to end: evaluate() on a VAE, N=%d, S=%d, in a fresh process", n, s)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"the end-to-end child failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    model = _build("vae", "standard").to(device)
    costs = model_costs(model, device)
    flop_is = 2 * (costs.sample * s_full + costs.point)  # per point, at the reported size (S = s_full)
    run_floor = n * 2 * (costs.sample * s + costs.point) / (peak * 1e9)  # the measured run's flop floor
    full = n >= n_full and s >= s_full
    t = res["timing_s"]
    if full:
        wall, label = res["wall_s"], "measured"
    else:
        t_is = t["importance_sampling"] * (n_full * s_full) / (n * s)
        rest = (res["wall_s"] - t["importance_sampling"]) * (n_full / n) ** 2  # matrix, BA, intervals: ~N^2
        wall, label = t_is + rest, f"EXTRAPOLATED from N={n}, S={s}"
    mem = res["maxrss_mib"]
    grow = (4 + 8 + 8) * (n_full**2 - n**2) / 2**20  # L (float32), exp(L) and a float64 copy in BA
    mem_note = f"peak RSS {mem:.0f} MiB" + ("" if n >= n_full else f" at N={n} (the N x N matrices grow as N^2: "
                                                                  f"~{grow:.0f} MiB more at N={n_full})")
    r = _row("e2e_eval", "vae", "standard", "binary", "points/s", n_full, wall, flop_is, peak,
             note=f"glossy eval equivalent (evaluate(): IS, matrix, BA, jackknife {sz['e2e_jackknife']}) "
                  f"on N={n_full}, S={s_full}: {label}; {mem_note}; run: IS {t['importance_sampling']:.1f}s, "
                  f"matrix {t['glossy_matrix']:.1f}s, total {res['wall_s']:.1f}s, BA iterations "
                  f"{res['ba_iterations']}")
    predicted = n * s / is_row["throughput"] + n * n / matrix_row["throughput"]
    r.update({"run_pct_of_floor": 100 * run_floor / res["wall_s"],
              "wall_s": wall, "peak_rss_mib": mem, "e2e_points": n, "e2e_samples": s, "e2e_label": label,
              "e2e_run_s": res["wall_s"], "predicted_s": predicted,
              "prediction_error_pct": 100 * (res["wall_s"] / predicted - 1)})
    r["note"] += (f"; the measured run (N={n}, S={s}) ran at {r['run_pct_of_floor']:.0f}% of its flop floor "
                  f"({run_floor:.1f} s at this thread count's peak)")
    r["note"] += (f"; the IS and matrix rows at {threads} thread(s) predict {predicted:.1f} s for this run "
                  f"(N={n}, S={s}): measured {res['wall_s']:.1f} s, {r['prediction_error_pct']:+.0f}% (the "
                  f"rest is BA, intervals and start-up, which the rows do not time)")
    return r


# --- the table ---------------------------------------------------------------------------------------
def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def machine_facts(device: torch.device, peak: float) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "host_cpu": cpu,
             "cpu_count": os.cpu_count(), "torch": str(torch.__version__), "python": platform.python_version(),
             "threads": torch.get_num_threads(), "device": str(device),
             "cpu_capability": torch.backends.cpu.get_cpu_capability(), "matmul_peak_gflops": peak}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        facts["loadavg_start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return facts


COLUMNS = ["operation", "model", "prior", "data", "unit", "throughput", "floor_flop_per_item", "gflops",
           "pct_of_peak", "threads", "baseline_throughput", "speedup", "speedup_at_peak", "vs_standard_twin",
           "vs_1_thread", "predicted_s", "prediction_error_pct", "run_pct_of_floor", "note"]


def to_markdown(rows: list[dict], facts: dict, quick: bool) -> str:
    head = ["operation", "model", "prior", "data", "threads", "throughput", "floor flop/item", "GFLOP/s",
            "% of peak", "naive", "speed-up", "speed-up at peak", "vs standard twin", "vs 1 thread"]
    title = "# glossy benchmark (scripts/bench.py)" + (" (quick mode: tiny sizes, not a measurement)" if quick else "")
    lines = [title, "",
             f"{facts['date']} · {facts['host_cpu']} · {facts['cpu_count']} CPUs · device {facts['device']}"
             + (f" ({facts['gpu']})" if "gpu" in facts else "")
             + f" · torch {facts['torch']} ({facts['cpu_capability']}) · threads {facts['threads']} · "
             f"load average at start {facts.get('loadavg_start', '?')}, at end {facts.get('loadavg_end', '?')}",
             "", "Matrix-product peak measured in this run before each thread count's rows: "
             + ", ".join(f"**{p:.1f} GFLOP/s** at {t} thread(s)" for t, p in facts["peaks"].items())
             + f" (fp32, {facts.get('peak_n', '?')}^2, best of {facts.get('repeats', '?')}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        thr = f"{_fmt(r['throughput'])} {r['unit']}"
        if r["operation"] == "e2e_eval":
            thr = (f"**{r['wall_s']:.0f} s wall, {r['peak_rss_mib']:.0f} MiB peak RSS** "
                   f"({'measured' if r['e2e_label'] == 'measured' else 'EXTRAPOLATED'}; {thr})")
        cells = [r["operation"], r["model"], r["prior"], r["data"], r["threads"], thr,
                 _fmt(float(r["floor_flop_per_item"])), _fmt(r["gflops"]), _fmt(r["pct_of_peak"]),
                 _fmt(r.get("baseline_throughput")), _fmt(r.get("speedup")) + ("x" if r.get("speedup") else ""),
                 _fmt(r.get("speedup_at_peak")) + ("x" if r.get("speedup_at_peak") else ""),
                 (_fmt(r["vs_standard_twin"]) + "x") if r.get("vs_standard_twin") else "",
                 (_fmt(r["vs_1_thread"]) + "x") if r.get("vs_1_thread") else ""]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines += ["", "What each column means: README.md, section Speed.", "", "Notes per row:", ""]
    lines += [f"- **{r['operation']} / {r['model']} / {r['prior']} / {r['threads']} thread(s)**: {r['note']}"
              for r in rows if r.get("note")]
    lines += ["", *facts.get("notes", [])]
    return "\n".join(lines) + "\n"


def thread_counts(device: torch.device, threads: int | None) -> list[int]:
    """The thread counts to measure at: the one asked for, else 1 and all of torch's default threads (a CPU
    with one core, or a GPU: just the default)."""
    if threads:
        return [int(threads)]
    every = torch.get_num_threads()
    return [1, every] if device.type == "cpu" and every > 1 else [every]


def run_bench(sizes: dict, device: torch.device, results_dir: str | Path, quick: bool = False,
              threads: int | None = None, seed: int = 0, notes: list[str] | None = None) -> tuple[list[dict], dict]:
    import pandas as pd

    from glossy.atomic import atomic_write_text

    sz = {**sizes, **(QUICK_SIZES if quick else {})}
    t_start = time.perf_counter()
    counts = thread_counts(device, threads)
    repeats = max(3, int(sz["repeats"]) + 2)
    rows: list[dict] = []
    peaks: dict[int, float] = {}

    def add(r, t):
        r["threads"] = t
        rows.append(r)
        log.info("%2d thread(s) %-26s %-9s %-8s %10.4g %s  %5.1f%% of peak  speed-up %s", t, r["operation"],
                 r["model"], r["prior"], r["throughput"], r["unit"], r["pct_of_peak"], _fmt(r.get("speedup")))

    for t in counts:  # every row at each thread count, against the peak measured at that count
        torch.set_num_threads(t)
        peak = peaks[t] = matmul_peak(device, int(sz["peak_n"]), repeats)
        log.info("matmul peak %.1f GFLOP/s on %s with %d thread(s)", peak, device, t)
        for name in ("vae", "hvae", "pixelhvae"):
            add(bench_train(name, sz, device, peak, seed), t)
        # IS: the standard model and its VampPrior twin measured back to back, twice, best of each
        for name in ("vae", "hvae", "pixelhvae"):
            pair = {}
            for _ in range(1 if quick else 2):
                for prior in ("standard", "vamp"):
                    r = bench_is(name, prior, sz, device, peak, seed)
                    if prior not in pair or r["throughput"] > pair[prior]["throughput"]:
                        pair[prior] = r
            add(pair["standard"], t)
            add(pair["vamp"], t)
        add(bench_matrix("binary", sz, device, peak, seed), t)
        add(bench_matrix("gray", sz, device, peak, seed), t)
        add(bench_intervals(sz, device, peak, seed), t)
    t_all = counts[-1]
    if sz.get("e2e", True):  # what a user sees: glossy eval at all threads, and how well the rows predict it
        by = {(r["operation"], r["model"], r["threads"]): r for r in rows if r["prior"] == "standard"}
        add(bench_e2e(sz, device, peaks[t_all], t_all, by[("importance_sampling", "vae", t_all)],
                      by[("glossy_matrix_bernoulli", "vae", t_all)]), t_all)
    by = {(r["operation"], r["model"], r["prior"], r["threads"]): r for r in rows}
    for (op, model, prior, t), r in by.items():
        if op == "importance_sampling" and prior == "vamp" and (op, model, "standard", t) in by:
            r["vs_standard_twin"] = by[(op, model, "standard", t)]["throughput"] / r["throughput"]  # time ratio
        if t != 1 and (op, model, prior, 1) in by and op != "e2e_eval":
            r["vs_1_thread"] = r["throughput"] / by[(op, model, prior, 1)]["throughput"]
    facts = machine_facts(device, peaks[t_all])
    facts.update(peak_n=sz["peak_n"], repeats=repeats, notes=list(notes or []), threads=counts, peaks=peaks)
    with contextlib.suppress(OSError):
        facts["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    facts["bench_seconds"] = time.perf_counter() - t_start
    out = Path(results_dir)
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    df["matmul_peak_gflops"] = df["threads"].map(peaks)
    for k in ("date", "host_cpu", "cpu_count", "torch", "device", "loadavg_start", "loadavg_end"):
        df[k] = facts.get(k)
    df["quick"] = quick
    extra = [c for c in df.columns if c not in COLUMNS]
    atomic_write_text(out / "bench.csv", df[COLUMNS + extra].to_csv(index=False))
    md = to_markdown(rows, facts, quick)
    atomic_write_text(out / "bench.md", md)
    return rows, facts


def main(argv: list[str]) -> int:
    from glossy_cli.main import flush_denormals, full_float32

    if argv[:1] == ["e2e-child"]:  # the end-to-end child: scripts/bench.py e2e-child N S THREADS DEVICE GROUPS
        flush_denormals()  # the numerics `glossy eval` runs with
        full_float32()
        n, s, threads, device, boot = argv[1:6]
        print(json.dumps(e2e_child(int(n), int(s), int(threads) or None, device, int(boot))))
        return 0
    try:
        st = parse_settings(argv)
    except ValueError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    from glossy_cli.runs import resolve_device

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    flush_denormals()  # measure what `glossy train` / `eval` run with
    full_float32()
    sizes = {f.name: getattr(st, f.name) for f in fields(st)
             if f.name not in ("quick", "threads", "notes", "device", "results_dir", "seed")}
    rows, facts = run_bench(sizes, resolve_device(st.device), st.results_dir, quick=st.quick, threads=st.threads,
                            seed=st.seed, notes=st.notes)
    print(to_markdown(rows, facts, st.quick))
    print(f"wrote {Path(st.results_dir) / 'bench.csv'} and bench.md ({facts['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
