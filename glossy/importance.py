"""The importance-sampling stage: log p^(x_j) and the ELBO of every point, each point's draws from its own
seeded stream, the decoder run in blocks of a size calibrated on this machine, resumable from the journal."""

from __future__ import annotations

import logging
import math
import os
import time

import torch

from glossy_models.base import LatentVariableModel

from .journal import ISJournal, JournalStage, fingerprint
from .memory import Plan
from .progress import resumed

log = logging.getLogger("glossy")


_MASK64 = 2**64 - 1


def _point_seed(base: int, j: int) -> int:
    """A seed for data point j: splitmix64 of (base, j), so that neighbouring points get unrelated streams."""
    z = (base + (j + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1  # 63 bits


# The decoder work of importance sampling runs in blocks of about this many bytes of activations
# (model.eval_bytes_per_sample() per sample): small enough that the elementwise passes (gates, the
# likelihood's log-sum terms) stay in cache, large enough for efficient matrix products. The size is
# calibrated at run time per device, thread count and model shape (`is_block_bytes`); this is the
# fallback (autoregressive models, GLOSSY_IS_BLOCK_BYTES unset and calibration impossible).
IS_BLOCK_BYTES = 12 * 2**20

_CALIBRATED: dict[tuple, int] = {}


def is_block_bytes(model, device: torch.device) -> int:
    """The decoder block size for importance sampling with this model on this device and thread count:
    $GLOSSY_IS_BLOCK_BYTES if set, else the fastest of blocks of 1-64 MiB of activations, timed once per
    process (best of two runs each on ~10^4 samples in all, a fraction of a second for the VAE and HVAE;
    the random state is left as it was). Autoregressive models keep IS_BLOCK_BYTES (their decoder is
    the PixelCNN; timing it would cost more than it saves). The numbers do not depend on the blocks."""
    if os.environ.get("GLOSSY_IS_BLOCK_BYTES"):
        return int(os.environ["GLOSSY_IS_BLOCK_BYTES"])
    if getattr(model, "autoregressive", False):
        return IS_BLOCK_BYTES
    bps = model.eval_bytes_per_sample()
    key = (str(device), torch.get_num_threads(), type(model).__name__, tuple(model.input_shape),
           model.latent_dim, bps)
    if key not in _CALIBRATED:
        _CALIBRATED[key] = _calibrate_block(model, device, bps)
        log.info("importance sampling in decoder blocks of %d samples (%.1f MiB), the fastest measured here",
                 _CALIBRATED[key] // bps, _CALIBRATED[key] / 2**20)
    return _CALIBRATED[key]


def reseed(seed: int, device: torch.device) -> None:
    """`torch.manual_seed(seed)` for the generators that draws on `device` use (the CPU's, and that GPU's): the
    same streams, at a hundredth of the cost. On a CUDA build of torch with CUDA not (yet) initialised,
    torch.manual_seed queues its GPU seeding with a recorded stack trace, 0.1-0.3 ms a call: once per data point,
    seconds of an evaluation."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":  # CUDA is initialised by then (the model is on the device): no stack is recorded
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def forked_rng(device: torch.device):
    """torch's random state (the CPU's, and the device's on CUDA) saved and restored around a block."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


@torch.no_grad()
def _calibrate_block(model, device: torch.device, bps: int) -> int:
    rows_list = sorted({max(1, (2**k * 2**20) // bps) for k in range(7)})  # 1, 2, ..., 64 MiB
    x = torch.full((1, *model.input_shape), 0.5 if model.input_type != "binary" else 0.0, device=device)
    with forked_rng(device):
        torch.manual_seed(0)
        z, lq = model.sample_posterior(x, rows_list[-1])

        def run(rows: int) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            _block_log_weights(model, x, z, lq, rows)  # the same samples for every size
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0

        run(rows_list[0])  # warm-up
        best = min(rows_list, key=lambda r: min(run(r), run(r)))
    return best * bps


# With the noise drawn point by point and the networks run on a group of points, a group spans about
# this many decoder blocks: the per-point overhead (encoder call, seeding, the block loop) is shared by the
# group's points, while the group's draws (S x latent floats per point) stay small beside one block.
GROUP_BLOCKS = 8


def is_blocks(n_samples: int, chunk_samples: int, bytes_per_sample: int, block_bytes: int = IS_BLOCK_BYTES,
              grouped_noise: bool = False) -> tuple[int, int]:
    """(points per group, samples per decoder block) for the fast importance sampling: a decoder block
    holds group * samples rows with group * samples <= min(block_bytes / bytes_per_sample, chunk_samples)
    (at least one row), so it never needs more memory than one chunk of the plan. Several points are
    grouped only when all their samples fit one chunk (small S), so each point's draws stay one stream:
    as many as one block holds whole, or, when the model's noise is drawn apart from its networks
    (`grouped_noise`), as many as GROUP_BLOCKS blocks hold, each block then taking a slice of every
    point's samples."""
    rows = max(1, min(int(block_bytes // max(1, bytes_per_sample)), chunk_samples))
    if n_samples > chunk_samples:
        return 1, rows
    group = max(1, min(rows, (GROUP_BLOCKS * rows if grouped_noise else rows) // n_samples))
    return group, max(1, rows // group)


def _posterior_draws(model, xg: torch.Tensor, s: int, dims, seeds: list[int] | None):
    """z [s, gp, latent] ~ q(z|x) and log q [s, gp] for the gp points of xg, the draws of point i from the
    global random stream reseeded with seeds[i] (None: the streams go on, for a later chunk of one point),
    so that they equal the plain path's. With the model's noise declared (dims), only the draws are made
    point by point and its networks run on all the points at once."""
    if dims:
        eps: list[list[torch.Tensor]] = [[] for _ in dims]
        for i in range(len(xg)):
            if seeds:
                reseed(seeds[i], xg.device)
            for k, d in enumerate(dims):
                eps[k].append(torch.randn(s, 1, d, device=xg.device, dtype=xg.dtype))
        return model.sample_posterior_given(xg, [torch.cat(e, 1) for e in eps])
    zs, lqs = [], []
    for i in range(len(xg)):
        if seeds:
            reseed(seeds[i], xg.device)
        z, lq = model.sample_posterior(xg[i : i + 1], s)
        zs.append(z)
        lqs.append(lq)
    return (zs[0], lqs[0]) if len(zs) == 1 else (torch.cat(zs, 1), torch.cat(lqs, 1))


def _block_log_weights(model, x: torch.Tensor, z: torch.Tensor, lq: torch.Tensor, block: int) -> torch.Tensor:
    """log l(x|z) + log p(z) - log q(z|x) [s, B] for the draws z [s, B, latent], in decoder blocks of
    `block` samples."""
    return torch.cat([model.log_likelihood(x, z[b : b + block]) + model.log_prior(z[b : b + block])
                      - lq[b : b + block] for b in range(0, z.shape[0], block)])


def _has_default_weights(model) -> bool:
    return getattr(type(model), "log_importance_weights", None) is LatentVariableModel.log_importance_weights


@torch.no_grad()
def importance_sampling(model, x: torch.Tensor, n_samples: int, plan: Plan, device: torch.device, progress=None,
                        block_bytes: int | None = None,
                        journal: ISJournal | JournalStage | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log p^(x_j) = logsumexp_s log w_s - log S and the mean of log w_s (an ELBO estimate), [N] each,
    float64. The random number generator is seeded per data point from (one draw of the current RNG,
    j): the draws of point j, hence every number, are the same whatever the memory budget and the
    order of the points, as long as the S samples of one point fit in it (S x `eval_bytes_per_sample`:
    ~140 MiB for S = 5000 on MNIST). Below that the samples of a point are split into chunks of
    `plan.samples`, whose draws differ (the estimate stays unbiased); the log-sum-exp over sample
    chunks is accumulated, so memory stays within the plan.

    The fast path (the default) draws exactly the same samples, then runs the likelihood and prior on them in
    cache-sized blocks (`is_blocks`) of `block_bytes` (None: `is_block_bytes`, calibrated on this machine),
    grouping the samples of several points into one block when S is small; block_bytes=0 is the plain path,
    one `log_importance_weights` call per chunk. Both give the same numbers up to floating-point noise
    (tests/test_eval.py). journal: an `ISJournal` (its "test" stage) or one stage of it (`journal.stage(name)`)
    to start after the points a cut-off run of that stage finished and to leave finished points in."""
    n = x.shape[0]
    base = int(torch.randint(0, 2**62, (1,)).item())
    after = torch.random.get_rng_state()
    if isinstance(journal, ISJournal):
        journal = journal.stage("test")
    key = {"fingerprint": fingerprint(model, x), "n_samples": n_samples, "chunk": plan.samples, "base": base} \
        if journal is not None else None
    start, log_px, elbo = _resume(journal, key, n, progress)
    chunks = [(s0, min(plan.samples, n_samples - s0)) for s0 in range(0, n_samples, plan.samples)]
    group, block, dims = _blocks(model, n_samples, plan, device, block_bytes)
    try:
        for g0 in range(start, n, group):
            xg = x[g0 : g0 + group].to(device, non_blocking=True)
            gp = xg.shape[0]
            seeds = [_point_seed(base, g0 + i) for i in range(gp)]
            log_px[g0 : g0 + gp], elbo[g0 : g0 + gp] = _sample_group(model, xg, chunks, seeds, dims, block)
            if progress is not None:
                progress.update(gp)
            if journal is not None:  # the last group's always: a finished stage is kept whole
                journal.record(key, g0 + gp, log_px, elbo, force=g0 + gp == n)
    finally:
        torch.random.set_rng_state(after)
    return log_px, elbo


def _resume(journal: JournalStage | None, key: dict | None, n: int, progress) -> tuple[int, torch.Tensor,
                                                                                          torch.Tensor]:
    """(points already done, log_px [n], elbo [n]): from the journal where a cut-off run of this stage left
    points, else none done."""
    if journal is None:
        return 0, torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    start, log_px, elbo = journal.resume(key, n)
    if start:
        log.info("importance sampling (%s): going on after the %d of %d points a cut-off run finished (%s)",
                 journal.name, start, n, journal.path)
        if progress is not None:
            resumed(progress, start)
    return start, log_px, elbo


def _blocks(model, n_samples: int, plan: Plan, device, block_bytes: int | None):
    """(points per group, samples per decoder block, the model's noise dims) of the fast path; (1, None, None)
    for the plain path (block_bytes=0, or a model with its own log_importance_weights)."""
    if block_bytes == 0 or not _has_default_weights(model):
        return 1, None, None
    dims = model.posterior_noise_dims()
    group, block = is_blocks(n_samples, plan.samples, model.eval_bytes_per_sample(),
                             block_bytes or is_block_bytes(model, device), grouped_noise=bool(dims))
    return group, block, dims


def _sample_group(model, xg: torch.Tensor, chunks, seeds: list[int], dims, block: int | None):
    """log p^(x) and the ELBO [gp] of a group of points, chunk by chunk of samples; each point's stream is
    seeded before its first chunk and later chunks continue it. block None: the plain path."""
    gp = xg.shape[0]
    acc = torch.full((gp,), -math.inf, dtype=torch.float64, device=xg.device)
    total = torch.zeros(gp, dtype=torch.float64, device=xg.device)
    n_samples = sum(s for _, s in chunks)
    for c, (_, s) in enumerate(chunks):
        first = seeds if c == 0 else None
        if block is None:
            if first:
                reseed(first[0], xg.device)
            lw = model.log_importance_weights(xg, s)  # [s, 1]
        else:
            z, lq = _posterior_draws(model, xg, s, dims, first)
            lw = _block_log_weights(model, xg, z, lq, block)  # [s, gp]
        lw = lw.to(torch.float64)
        acc = torch.logaddexp(acc, torch.logsumexp(lw, 0))
        total += lw.sum(0)
    return (acc - math.log(n_samples)).cpu(), (total / n_samples).cpu()
