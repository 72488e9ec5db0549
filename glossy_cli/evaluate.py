"""Evaluation of a trained model: importance-sampled NLL, candidates, the glossy matrix, log c(z),
the glossy statistics, the bounds, the Blahut-Arimoto sandwich and bootstrap intervals."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from glossy_models.base import LatentVariableModel

from . import bounds
from .atomic import atomic_torch_save
from .errors import GlossyError

log = logging.getLogger("glossy")


class LogProgress:
    """Progress for a log file rather than a terminal (a cluster job's output): one log line at each
    tenth of the work, once the work has run for `quiet_s` seconds (short evaluations stay silent), in
    place of tqdm's carriage-return bar that would fill the log with one long line."""

    def __init__(self, total: int, desc: str, unit: str, quiet_s: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.quiet_s = total, desc, unit, quiet_s
        self.done, self.mark, self.t0, self.base = 0, 1, time.perf_counter(), 0

    def resumed(self, k: int) -> None:
        """k units were done by an earlier, cut-off run: counted as done, but not in the rate."""
        self.done = self.base = k
        self.mark = 10 * k // max(self.total, 1) + 1

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, k: int) -> None:
        self.done += k
        tenth = 10 * self.done // max(self.total, 1)
        if tenth < self.mark:
            return
        self.mark = tenth + 1
        elapsed = time.perf_counter() - self.t0
        if elapsed >= self.quiet_s and self.done < self.total:
            left = elapsed * (self.total - self.done) / max(self.done - self.base, 1)
            log.info("%s: %d/%d %s (%d%%), %s elapsed, about %s left", self.desc, self.done, self.total,
                     self.unit, 100 * self.done // self.total, _hms(elapsed), _hms(left))


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _resumed(progress, k: int) -> None:
    """Tell a progress bar that k units were done before it started, keeping them out of its rate."""
    if isinstance(progress, LogProgress):
        progress.resumed(k)
    elif hasattr(progress, "initial"):  # tqdm: its rate is (n - initial) / elapsed
        progress.initial = progress.n = progress.last_print_n = k
        progress.refresh()
    else:
        progress.update(k)


def _progress(show: bool | str, total: int, desc: str, unit: str):
    """show: True, a tqdm bar; "log", LogProgress; False, nothing."""
    from tqdm.auto import tqdm

    if show == "log":
        return LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False)


@dataclass(frozen=True)
class Plan:
    points: int  # data points per importance-sampling chunk
    samples: int  # importance samples per chunk
    matrix_rows: int  # candidates per block of the glossy matrix
    matrix_cols: int  # data points per block of the glossy matrix

    def describe(self) -> str:
        return (f"importance sampling in chunks of {self.points} point{'s' * (self.points != 1)} x "
                f"{self.samples} samples; "
                f"glossy matrix in blocks of {self.matrix_rows} x {self.matrix_cols}")


def plan_chunks(n_points: int, n_samples: int, bytes_per_item: int, budget_bytes: int) -> tuple[int, int]:
    """(points, samples) per chunk with points * samples * bytes_per_item <= budget_bytes, as many
    samples per point as fit (so that the encoder runs once per point when possible)."""
    items = int(budget_bytes // max(1, bytes_per_item))
    if items < 1:
        raise GlossyError(f"memory budget of {budget_bytes / 2**20:.3g} MiB cannot hold even one importance "
                          f"sample ({bytes_per_item / 2**20:.2f} MiB); raise eval.memory_budget_gb")
    samples = min(n_samples, items)
    points = max(1, min(n_points, items // samples))
    return points, samples


def make_plan(model, n_points: int, n_candidates: int, n_samples: int, budget_bytes: int) -> Plan:
    # importance sampling runs one data point per call (see `importance_sampling`), so that its
    # random draws, hence the numbers, do not depend on the budget; only its samples are chunked
    _, samples = plan_chunks(1, n_samples, model.eval_bytes_per_sample(), budget_bytes)
    points = 1
    d = math.prod(model.input_shape)
    if model.autoregressive:
        pairs = max(1, budget_bytes // model.matrix_bytes_per_pair())
        cols = max(1, min(n_points, pairs))
        rows = max(1, min(n_candidates, pairs // cols))
    else:
        # per candidate row: decoder output [D], its share of the [rows, cols] block, and for the
        # logistic the per-row table [D * 256] plus the gathered [cols_gather, D] temporaries
        per_row = 4 * (8 * d + n_points + (2 * 256 * d + 64 * d if model.input_type != "binary" else 0))
        rows = max(1, min(n_candidates, budget_bytes // per_row))
        cols = n_points
    return Plan(points, samples, rows, cols)


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
                torch.manual_seed(seeds[i])
            for k, d in enumerate(dims):
                eps[k].append(torch.randn(s, 1, d, device=xg.device, dtype=xg.dtype))
        return model.sample_posterior_given(xg, [torch.cat(e, 1) for e in eps])
    zs, lqs = [], []
    for i in range(len(xg)):
        if seeds:
            torch.manual_seed(seeds[i])
        z, lq = model.sample_posterior(xg[i : i + 1], s)
        zs.append(z)
        lqs.append(lq)
    return (zs[0], lqs[0]) if len(zs) == 1 else (torch.cat(zs, 1), torch.cat(lqs, 1))


def _block_log_weights(model, x: torch.Tensor, z: torch.Tensor, lq: torch.Tensor, block: int) -> torch.Tensor:
    """log l(x|z) + log p(z) - log q(z|x) [s, B] for the draws z [s, B, latent], in decoder blocks of
    `block` samples."""
    return torch.cat([model.log_likelihood(x, z[b : b + block]) + model.log_prior(z[b : b + block])
                      - lq[b : b + block] for b in range(0, z.shape[0], block)])


def _fingerprint(model, x: torch.Tensor) -> str:
    """sha256 of the model's weights and buffers and of the data: what importance sampling's numbers rest on."""
    h = hashlib.sha256()
    for name, t in [*sorted(model.state_dict().items()), ("x", x)]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ISJournal:
    """Where importance sampling leaves the points it has finished, so that an evaluation cut off (a
    session's end, a cluster's pre-emption) goes on from them when it is run again: one file, written
    atomically at most every `every_s` seconds, holding each stage's finished points under a key of what
    their numbers rest on (the model's weights, the data, S, the sample chunking, the stage's seed). A
    point's draws are seeded per point, so the points after a resume are those an uninterrupted run
    draws. A key that does not match (another checkpoint, other settings) is ignored and overwritten."""

    def __init__(self, path: str | Path, every_s: float = 60.0) -> None:
        self.path, self.every_s = Path(path), every_s
        self._last = time.monotonic()

    def _read(self) -> dict:
        try:
            got = torch.load(self.path, weights_only=True)
        except Exception:  # absent, cut off mid-write by an older version, or not ours: start afresh
            return {}
        return got if isinstance(got, dict) else {}

    def resume(self, stage: str, key: dict, n: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(points done, log_px [n], elbo [n]) of `stage` from the file when its key matches, else 0 done."""
        got = self._read().get(stage)
        if not got or got.get("key") != key or len(got.get("log_px", ())) != n:
            return 0, torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
        return int(got["done"]), got["log_px"].to(torch.float64), got["elbo"].to(torch.float64)

    def record(self, stage: str, key: dict, done: int, log_px: torch.Tensor, elbo: torch.Tensor,
               force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.every_s:
            return
        data = self._read()
        data[stage] = {"key": key, "done": done, "log_px": log_px.clone(), "elbo": elbo.clone()}
        atomic_torch_save(self.path, data)
        self._last = time.monotonic()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _has_default_weights(model) -> bool:
    return getattr(type(model), "log_importance_weights", None) is LatentVariableModel.log_importance_weights


@torch.no_grad()
def importance_sampling(model, x: torch.Tensor, n_samples: int, plan: Plan, device: torch.device, progress=None,
                        fast: bool = True, block_bytes: int | None = None,
                        journal: ISJournal | None = None, stage: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """log p^(x_j) = logsumexp_s log w_s - log S and the mean of log w_s (an ELBO estimate), [N] each,
    float64. The random number generator is seeded per data point from (one draw of the current RNG,
    j): the draws of point j, hence every number, are the same whatever the memory budget and the
    order of the points, as long as the S samples of one point fit in it (S x `eval_bytes_per_sample`:
    ~140 MiB for S = 5000 on MNIST). Below that the samples of a point are split into chunks of
    `plan.samples`, whose draws differ (the estimate stays unbiased); the log-sum-exp over sample
    chunks is accumulated, so memory stays within the plan.

    `fast` (the default) draws exactly the same samples, then runs the likelihood and prior on them in
    cache-sized blocks (`is_blocks`), grouping the samples of several points into one block when S is
    small; `fast=False` is the plain path, one `log_importance_weights` call per chunk. Both give the
    same numbers up to floating-point noise (tests/test_eval.py). block_bytes: the decoder blocks' size
    (None: `is_block_bytes`, calibrated on this machine). journal: an `ISJournal` to start after the points
    a cut-off run of the same `stage` finished and to leave finished points in."""
    n = x.shape[0]
    base = int(torch.randint(0, 2**62, (1,)).item())
    after = torch.random.get_rng_state()
    start, log_px, elbo = 0, torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    if journal is not None:
        key = {"fingerprint": _fingerprint(model, x), "n_samples": n_samples, "chunk": plan.samples, "base": base}
        start, log_px, elbo = journal.resume(stage, key, n)
        if start:
            log.info("importance sampling (%s): going on after the %d of %d points a cut-off run finished (%s)",
                     stage, start, n, journal.path)
            if progress is not None:
                _resumed(progress, start)
    chunks = [(s0, min(plan.samples, n_samples - s0)) for s0 in range(0, n_samples, plan.samples)]
    dims = model.posterior_noise_dims() if fast else None
    if fast and _has_default_weights(model):
        group, block = is_blocks(n_samples, plan.samples, model.eval_bytes_per_sample(),
                                 block_bytes or is_block_bytes(model, device), grouped_noise=bool(dims))
    else:
        fast, group, block = False, 1, plan.samples
    try:
        for g0 in range(start, n, group):
            xg = x[g0 : g0 + group].to(device, non_blocking=True)
            gp = xg.shape[0]
            acc = torch.full((gp,), -math.inf, dtype=torch.float64, device=device)
            total = torch.zeros(gp, dtype=torch.float64, device=device)
            for c, (_, s) in enumerate(chunks):
                # each point's stream is seeded before its first chunk; later chunks continue it
                seeds = [_point_seed(base, g0 + i) for i in range(gp)] if c == 0 else None
                if not fast:
                    if seeds:
                        torch.manual_seed(seeds[0])
                    lw = model.log_importance_weights(xg, s)  # [s, 1]
                else:
                    z, lq = _posterior_draws(model, xg, s, dims, seeds)
                    lw = _block_log_weights(model, xg, z, lq, block)  # [s, gp]
                lw = lw.to(torch.float64)
                acc = torch.logaddexp(acc, torch.logsumexp(lw, 0))
                total += lw.sum(0)
            log_px[g0 : g0 + gp] = (acc - math.log(n_samples)).cpu()
            elbo[g0 : g0 + gp] = (total / n_samples).cpu()
            if progress is not None:
                progress.update(gp)
            if journal is not None:  # the last group's always: a finished stage is kept whole
                journal.record(stage, key, g0 + gp, log_px, elbo, force=g0 + gp == n)
    finally:
        torch.random.set_rng_state(after)
    return log_px, elbo


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model.posterior_mean(x[i : i + batch].to(device)) for i in range(0, len(x), batch)])


@torch.no_grad()
def prior_candidates_of(model, m: int, device, batch: int = 1000) -> torch.Tensor:
    """m samples of the model's prior [m, latent_dim], drawn `batch` at a time from the current RNG."""
    if type(model).sample_prior is LatentVariableModel.sample_prior:
        raise GlossyError(f"eval.candidates includes 'prior' but {type(model).__name__} does not implement "
                          "sample_prior(n); drop 'prior' from eval.candidates")
    return torch.cat([model.sample_prior(min(batch, m - i)).to(device) for i in range(0, m, batch)])


@torch.no_grad()
def likelihood_matrix(model, x: torch.Tensor, z: torch.Tensor, plan: Plan, device: torch.device,
                      progress=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """L[i, j] = log l(x_j | z_i), [M, N] float32 on `device`, computed block by block (into `out` if given)."""
    m, n = z.shape[0], x.shape[0]
    xd = x.to(device)
    if out is None and m <= plan.matrix_rows and n <= plan.matrix_cols:  # one block: no copy into a second matrix
        L = model.log_likelihood_matrix(xd, z.to(device)).to(torch.float32)
        if progress is not None:
            progress.update(m)
        return L
    if out is None:
        out = torch.empty(m, n, dtype=torch.float32, device=device)
    for i in range(0, m, plan.matrix_rows):
        zb = z[i : i + plan.matrix_rows].to(device)
        for j in range(0, n, plan.matrix_cols):
            out[i : i + len(zb), j : j + plan.matrix_cols] = model.log_likelihood_matrix(
                xd[j : j + plan.matrix_cols], zb)
        if progress is not None:
            progress.update(len(zb))
    return out


SOURCES = ("test", "train", "valid", "prior")
SOURCE_HELP = ("test: the posterior means of the evaluated images (the paper's text, in-sample); train / valid: "
               "those of the training / validation images; prior: samples from the model's prior")


def candidate_list(candidates) -> list[str]:
    """eval.candidates as a list of source names (a single name is accepted too)."""
    return [candidates] if isinstance(candidates, str) else [str(c) for c in candidates]


@dataclass(frozen=True)
class Sizes:
    """How many points, candidates and held-out images an evaluation with these settings uses."""

    n: int  # evaluated data points
    m: dict  # source -> number of candidates
    n_fit: int  # validation images the held-out prior is fitted on (0: no held-out sandwich)
    m_atoms: int  # atoms of the held-out prior (the training candidates)

    def reserved_bytes(self) -> int:
        """The matrices kept whole: the in-sample one (sandwich, paired bootstrap) and the held-out fit's."""
        test = 4 * (self.m["test"] + 1) * self.n if self.m.get("test") else 0  # + the prior's row (sandwich)
        return test + (4 * (self.m_atoms + 1) * self.n_fit if self.n_fit else 0)


def _cap(n: int, max_candidates: int | None, autoregressive_cap: int | None) -> int:
    cap = n if max_candidates is None else min(n, max_candidates)
    return cap if autoregressive_cap is None else min(cap, autoregressive_cap)


def eval_sizes(model, n_total: int, candidates=("test",), n_train: int = 0, n_valid: int = 0, heldout: bool = False,
               max_points=None, max_candidates=None, autoregressive_max_candidates=None,
               prior_candidates=None) -> Sizes:
    candidates = candidate_list(candidates)
    ar = autoregressive_max_candidates if model.autoregressive else None
    n = n_total if max_points is None else min(n_total, max_points)
    avail = {"test": n, "train": n_train, "valid": n_valid,
             "prior": n if prior_candidates is None else int(prior_candidates)}
    unknown = [c for c in candidates if c not in SOURCES]
    if unknown:
        raise GlossyError(f"eval.candidates={candidates}: unknown source {unknown[0]!r}; valid: "
                          f"{', '.join(SOURCES)} ({SOURCE_HELP})")
    missing = [c for c in candidates if avail[c] < 1]
    if missing:
        raise GlossyError(f"eval.candidates includes {missing[0]!r} but there are no {missing[0]} images to take "
                          f"candidates from; drop it from eval.candidates")
    m = {c: _cap(avail[c], max_candidates, ar) for c in candidates}
    n_fit = m_atoms = 0
    if heldout:
        if n_train < 1 or n_valid < 1:
            raise GlossyError("eval.heldout=true needs training images (the atoms) and validation images (to fit "
                              "the prior on); set eval.heldout=false for data without them")
        n_fit = n_valid if max_points is None else min(n_valid, max_points)
        m_atoms = _cap(n_train, max_candidates, ar)
    return Sizes(n, m, n_fit, m_atoms)


def _plan_within_budget(model, sizes: Sizes, is_samples: int, memory_budget_gb: float) -> Plan:
    budget = int(memory_budget_gb * 2**30)
    reserved = sizes.reserved_bytes()
    if reserved > budget:
        parts = []
        if sizes.m.get("test"):
            parts.append(f"the {sizes.m['test']} x {sizes.n} glossy matrix (and the prior's row) needs "
                         f"{4 * (sizes.m['test'] + 1) * sizes.n / 2**30:.3g} GiB")
        if sizes.n_fit:
            parts.append(f"the held-out fit's {sizes.m_atoms + 1} x {sizes.n_fit} matrix "
                         f"{4 * (sizes.m_atoms + 1) * sizes.n_fit / 2**30:.3g} GiB")
        raise GlossyError(f"eval.memory_budget_gb={memory_budget_gb} cannot hold the evaluation: {' and '.join(parts)}"
                          f", over the budget; raise eval.memory_budget_gb or cap eval.max_candidates / "
                          f"eval.max_points" + ("" if not sizes.n_fit else " (or set eval.heldout=false)"))
    per_sample = model.eval_bytes_per_sample()
    if budget - reserved < per_sample:
        raise GlossyError(f"eval.memory_budget_gb={memory_budget_gb} cannot hold the evaluation: the glossy "
                          f"matrices take {reserved / 2**20:.3g} MiB of it and one importance sample needs "
                          f"{per_sample / 2**20:.3g} MiB more; raise eval.memory_budget_gb")
    m_stream = max([sizes.n, *sizes.m.values()])
    return make_plan(model, sizes.n, m_stream, is_samples, budget - reserved)


def check_budget(model, n_total: int, *, is_samples: int, candidates=("test",), n_train: int = 0, n_valid: int = 0,
                 heldout: bool = False, max_points=None, max_candidates=None, autoregressive_max_candidates=None,
                 prior_candidates=None, memory_budget_gb: float = 4.0) -> Plan:
    """The plan `evaluate` will use on `n_total` points with these settings, or the GlossyError it would
    raise when the memory budget cannot hold it. Cheap: training calls it before its first epoch, so that
    a budget that cannot fit fails at once rather than after hours of training."""
    sizes = eval_sizes(model, n_total, candidates, n_train, n_valid, heldout, max_points, max_candidates,
                       autoregressive_max_candidates, prior_candidates)
    return _plan_within_budget(model, sizes, is_samples, memory_budget_gb)


def keyword_only(fn) -> frozenset[str]:
    return frozenset(k for k, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def settings_for(keys: frozenset[str], settings: dict) -> dict:
    """The entries of an eval config (result.json's eval_config) among `keys` (EVALUATE_KEYS, BUDGET_KEYS)."""
    return {k: v for k, v in settings.items() if k in keys}


def _subset(n: int, cap: int | None, seed: int) -> torch.Tensor | None:
    if cap is None or cap >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def _fail_if_not_finite(values: torch.Tensor, what: str, index_names: tuple[str, ...],
                        allow_minus_inf: bool = False) -> None:
    """Stop with a clear message when an intermediate quantity holds NaN (or inf), before anything is written."""
    bad = torch.isnan(values) | (values == math.inf)
    if not allow_minus_inf:
        bad |= values == -math.inf
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0]]
        where = ", ".join(f"{name} {i}" for name, i in zip(index_names, first))
        raise GlossyError(f"evaluation failed: {what} is NaN or infinite for {int(bad.sum())} of {values.numel()} "
                          f"entries (first at {where}: {values[tuple(first)].item()}); the model produces "
                          "non-finite log-likelihoods (check the checkpoint's training history); nothing was written")


def _finite_or_fail(result: dict, keys) -> None:
    bad = [k for k in keys if isinstance(result.get(k), float) and not math.isfinite(result[k])]
    if bad:
        raise GlossyError("evaluation produced non-finite values for " + ", ".join(
            f"{k} = {result[k]}" for k in bad) + "; the model's log-likelihoods overflowed or are NaN "
            "(check the checkpoint's training history); nothing was written")


def _source_stats(lc: torch.Tensor, nll: float, suffix: str) -> dict:
    st = bounds.glossy_stats(lc)
    return {f"glossy_max{suffix}": st["glossy_max"], f"glossy_std{suffix}": st["glossy_std"],
            f"glossy_var{suffix}": st["glossy_std"] ** 2, f"glossy_mean{suffix}": lc.mean().item(),
            f"glossy_argmax{suffix}": st["argmax"], f"lower_bound{suffix}": bounds.lower_bound(nll, lc)}


@torch.no_grad()
def stream_source(model, x: torch.Tensor, z: torch.Tensor, log_px: torch.Tensor, plan: Plan, device,
                  counts: torch.Tensor | None = None, log_w_atoms: torch.Tensor | None = None, progress=None):
    """For candidates z [M] on data x [N], without keeping the M x N matrix: log c(z_i) [M]; with bootstrap
    counts [B, N], the resampled log c [M, B]; with log weights on the M candidates, the atoms' part of the
    mixture marginal log sum_i w_i l(x_j | z_i) [N]. One block of `plan.matrix_rows` candidates at a time."""
    lpx = log_px.to(device=device, dtype=torch.float64)
    lc, lcb = [], []
    mix = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=device)
    for i in range(0, z.shape[0], plan.matrix_rows):
        Lb = likelihood_matrix(model, x, z[i : i + plan.matrix_rows], plan, device)  # [rows, N]
        _fail_if_not_finite(Lb, "the glossy matrix log l(x_j | z_i)", ("candidate", "point"), allow_minus_inf=True)
        lc.append(bounds.log_c(Lb, lpx))
        if counts is not None:
            lcb.append(bounds.resampled_log_c(Lb, lpx, counts))
        if log_w_atoms is not None:
            lw = log_w_atoms[i : i + Lb.shape[0]].to(device=device, dtype=torch.float64)
            mix = torch.logaddexp(mix, bounds.mixture_log_marginal(Lb, lw))
        if progress is not None:
            progress.update(Lb.shape[0])
    return torch.cat(lc), (torch.cat(lcb) if counts is not None else None), \
        (mix if log_w_atoms is not None else None)


def _in_sample(model, x, z, lpx, nll, plan, device, show_progress, *, paired_ok: bool, bootstrap: int,
               bootstrap_level: float, seed: int, ba_iters: int, ba_tol: float,
               ba_bytes: int, timing: dict) -> tuple[torch.Tensor, dict]:
    """The test source: candidates at the evaluated images' own codes. Its whole matrix is kept for the
    in-sample Blahut-Arimoto sandwich and the paired bootstrap, built inside the sandwich's augmented
    matrix (one more row: the model's prior) so that L is never copied. Returns (log c [M], fields); the
    seconds of the matrix, the sandwich and the bootstrap go into `timing`."""
    t1 = time.perf_counter()
    aug = torch.empty(len(z) + 1, len(x), dtype=torch.float32, device=device)
    L = aug[:-1]
    with _progress(show_progress, len(z), "glossy matrix (test candidates)", "candidates") as bar:
        likelihood_matrix(model, x, z, plan, device, bar, out=L)
    aug[-1] = lpx.to(torch.float32)
    timing["glossy_matrix"] = time.perf_counter() - t1
    _fail_if_not_finite(L, "the glossy matrix log l(x_j | z_i)", ("candidate", "point"), allow_minus_inf=True)
    lc = bounds.log_c(L, lpx)
    st = _source_stats(lc, nll, "_test")
    fields = {**st, **{k.removesuffix("_test"): v for k, v in st.items()
                       if k.startswith(("glossy_max", "glossy_std", "lower_bound"))},
              "n_candidates": len(z), "n_candidates_test": len(z)}
    t1 = time.perf_counter()
    fields.update(bounds.sandwich(L, lpx, max_iter=ba_iters, tol=ba_tol, max_bytes=ba_bytes, augmented=aug))
    timing["sandwich"] = time.perf_counter() - t1
    if bootstrap > 0 and paired_ok:
        t1 = time.perf_counter()
        for k, (lo, hi) in bounds.bootstrap(L, lpx, bootstrap, seed=seed, level=bootstrap_level).items():
            fields[f"{k}_ci"] = [lo, hi]
            if k != "nll":
                fields[f"{k}_test_ci"] = [lo, hi]
        timing["bootstrap"] = time.perf_counter() - t1
    elif bootstrap > 0:
        log.info("bootstrap of the test candidates skipped: it resamples points with their candidates (needs M = N)")
    return lc.cpu(), fields


def _heldout_fit(model, fit, za, plan, device, show_progress, is_samples: int, *, ba_iters: int, ba_tol: float,
                 ba_bytes: int, timing: dict, journal: ISJournal | None = None) -> tuple[torch.Tensor, dict]:
    """Blahut-Arimoto weights on the atoms za plus the model's own prior, fitted on the images `fit` (their
    log p^(x) importance-sampled here). Returns the log weights [M + 1] (the prior's last) and the fields;
    the seconds of its importance sampling, matrix and Blahut-Arimoto go into `timing`."""
    t1 = time.perf_counter()
    with _progress(show_progress, len(fit), "importance sampling (held-out fit)", "points") as bar:
        lpx_fit, _ = importance_sampling(model, fit, is_samples, plan, device, bar, journal=journal,
                                         stage="held-out fit")
    _fail_if_not_finite(lpx_fit, "the importance-sampled log p(x_j) of the validation images", ("point",))
    timing["heldout_importance_sampling"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    aug = torch.empty(len(za) + 1, len(fit), dtype=torch.float32, device=device)  # the atoms, then the prior
    with _progress(show_progress, len(za), "held-out fit matrix", "candidates") as bar:
        likelihood_matrix(model, fit, za, plan, device, bar, out=aug[:-1])
    aug[-1] = lpx_fit.to(device)
    _fail_if_not_finite(aug, "the held-out glossy matrix", ("candidate", "point"), allow_minus_inf=True)
    timing["heldout_matrix"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    ho = bounds.prior_fit_augmented(aug, max_iter=ba_iters, tol=ba_tol, max_bytes=ba_bytes)
    timing["heldout_ba"] = time.perf_counter() - t1
    return ho["log_w"], {"ba_heldout_prior_weight": ho["prior_weight"], "ba_heldout_fit_nll": ho["fit_nll"],
                         "nll_heldout_fit_model": bounds.nll(lpx_fit), "ba_heldout_gap": ho["fit_gap"],
                         "ba_heldout_iterations": ho["iterations"], "ba_heldout_converged": ho["converged"],
                         "n_heldout_fit": len(fit), "n_heldout_atoms": len(za)}


def evaluate(model, x: torch.Tensor, *, train_x: torch.Tensor | None = None, valid_x: torch.Tensor | None = None,
             candidates=("test",), heldout: bool = False, true_model=None, is_samples: int = 5000,
             max_points=None, max_candidates=None, autoregressive_max_candidates=None, prior_candidates=None,
             subset_seed: int = 0, seed: int = 1234, memory_budget_gb: float = 4.0,
             bootstrap: int = 100, bootstrap_level: float = 0.95, ba_iters: int = 500, ba_tol: float = 1e-4,
             device: torch.device | str = "cpu", show_progress: bool | str = True, keep: dict | None = None,
             journal: ISJournal | None = None) -> dict:
    """Every number of result.json for model on data x [N, C, H, W]. Pure in its inputs: the same
    model, data and settings give the same numbers; `memory_budget_gb` changes only the chunking, never
    the numbers (up to floating-point noise of blocked matrix products). show_progress: True, tqdm bars;
    "log", a log line at each tenth of a long stage; False, nothing.

    candidates: where the candidate latents z_i come from, any of `SOURCES`: "test" (the posterior means
    of x itself, the paper's text; its statistics keep the plain names glossy_max, glossy_std, lower_bound,
    nll_ba), "train" / "valid" (those of train_x / valid_x) and "prior" (samples of the model's prior);
    each source's statistics are named with its suffix (glossy_max_train, ...). heldout: Blahut-Arimoto
    weights on the training candidates plus the model's prior, fitted on valid_x and scored on x
    (nll_ba_heldout). keep: a dict to receive the per-point and per-candidate tensors (log_px, elbo, and
    log_c_<source>, candidates_<source>: the indices of the images the candidates came from). journal: an
    `ISJournal` that keeps finished importance-sampling points, so that a cut-off evaluation run again
    goes on from them (the same numbers)."""

    device = torch.device(device)
    t0 = time.perf_counter()
    candidates = list(dict.fromkeys(candidate_list(candidates)))
    sub = _subset(len(x), max_points, subset_seed)
    if sub is not None:
        x = x[sub]
    sizes = eval_sizes(model, len(x), candidates, 0 if train_x is None else len(train_x),
                       0 if valid_x is None else len(valid_x), heldout, max_points, max_candidates,
                       autoregressive_max_candidates, prior_candidates)
    n = sizes.n
    plan = _plan_within_budget(model, sizes, is_samples, memory_budget_gb)
    ba_bytes = max(0, int(memory_budget_gb * 2**30) - sizes.reserved_bytes())
    log.info("evaluating N=%d points, candidates %s, S=%d samples on %s%s; %s", n,
             ", ".join(f"{c} M={sizes.m[c]}" for c in candidates), is_samples, device,
             f"; held-out prior on {sizes.m_atoms} training atoms fitted on {sizes.n_fit} validation images"
             if heldout else "", plan.describe())
    ba = [f"in-sample {sizes.m['test'] + 1} x {n}: {bounds.ba_storage(sizes.m['test'] + 1, n, ba_bytes)}"
          ] if sizes.m.get("test") else []
    if heldout:
        ba.append(f"held-out {sizes.m_atoms + 1} x {sizes.n_fit}: "
                  f"{bounds.ba_storage(sizes.m_atoms + 1, sizes.n_fit, ba_bytes)}")
    if ba:
        log.info("Blahut-Arimoto within the budget's remaining %.3g GiB (kept matrices %.3g GiB): %s",
                 ba_bytes / 2**30, sizes.reserved_bytes() / 2**30, "; ".join(ba))
    macs = model.decoder_macs()
    m_all = sum(sizes.m.values()) + sizes.m_atoms
    n_is = n + sizes.n_fit
    log.info("cost: importance sampling %d decoder passes, glossy matrices %d %s; about %.3g GFLOP",
             n_is * is_samples, m_all * n if model.autoregressive else m_all,
             "decoder passes (M x N, autoregressive)" if model.autoregressive
             else "decoder passes (M) + M x N products",
             2e-9 * macs * (n_is * is_samples + (m_all * n if model.autoregressive else m_all)))

    def images(src: str) -> torch.Tensor:
        return {"test": x, "train": train_x, "valid": valid_x}[src]

    # which images give the candidates of each source: a seeded subset where capped
    seeds = {"test": subset_seed + 1, "train": subset_seed + 2, "valid": subset_seed + 3}
    picks = {c: _subset(len(images(c)), sizes.m[c], seeds[c]) for c in candidates if c != "prior"}
    timing: dict[str, float] = {}
    gen_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    torch.manual_seed(seed)
    result: dict = {"n_points": n, "is_samples": is_samples, "candidates": candidates}
    lc_by: dict[str, torch.Tensor] = {}
    try:
        with model.frozen():
            with _progress(show_progress, n, "importance sampling", "points") as bar:
                log_px, elbo = importance_sampling(model, x, is_samples, plan, device, bar, journal=journal)
            timing["importance_sampling"] = time.perf_counter() - t0
            _fail_if_not_finite(log_px, "the importance-sampled log p(x_j)", ("point",))
            nll = bounds.nll(log_px)
            result.update(nll=nll, elbo=elbo.mean().item())
            lpx = log_px.to(device)
            counts = bounds.bootstrap_counts(n, bootstrap, seed).to(device) if bootstrap > 0 else None
            if bootstrap > 0:
                result.update(bootstrap=bootstrap, bootstrap_level=bootstrap_level)

            cache: dict[str, torch.Tensor] = {}

            def zs(src: str) -> torch.Tensor:
                if src == "train":  # used twice with the held-out sandwich: computed once
                    if "train" not in cache:
                        pick = picks["train"] if "train" in picks else _subset(len(train_x), sizes.m_atoms,
                                                                               seeds["train"])
                        cache["train"] = posterior_means(model, train_x if pick is None else train_x[pick], device)
                    return cache["train"]
                if src == "prior":
                    torch.manual_seed(seed + 2)
                    return prior_candidates_of(model, sizes.m["prior"], device)
                imgs = images(src) if picks[src] is None else images(src)[picks[src]]
                return posterior_means(model, imgs, device)

            if "test" in candidates:  # in-sample: the whole matrix is kept for the sandwich and the paired bootstrap
                t1 = time.perf_counter()
                lc_by["test"], fields = _in_sample(
                    model, x, zs("test"), lpx, nll, plan, device, show_progress, paired_ok=picks["test"] is None,
                    bootstrap=bootstrap, bootstrap_level=bootstrap_level, seed=seed, ba_iters=ba_iters, ba_tol=ba_tol,
                    ba_bytes=ba_bytes, timing=timing)
                result.update(fields)
                timing["test_candidates"] = time.perf_counter() - t1

            log_w = None
            if heldout:  # fit a prior on the training atoms to validation images; score it below on x
                t1 = time.perf_counter()
                fit = valid_x if sizes.n_fit == len(valid_x) else valid_x[_subset(len(valid_x), sizes.n_fit,
                                                                                  subset_seed + 4)]
                torch.manual_seed(seed + 1)
                log_w, fields = _heldout_fit(model, fit, zs("train"), plan, device, show_progress, is_samples,
                                             ba_iters=ba_iters, ba_tol=ba_tol, ba_bytes=ba_bytes, timing=timing,
                                             journal=journal)
                result.update(fields)
                timing["heldout_fit"] = time.perf_counter() - t1
                if "train" not in candidates:  # score the atoms on x alone
                    _, _, mix = stream_source(model, x, zs("train"), lpx, plan, device, log_w_atoms=log_w[:-1])
                    result["nll_ba_heldout"] = bounds.heldout_nll(log_w, lpx, mix)

            for src in candidates:
                if src == "test":
                    continue
                t1 = time.perf_counter()
                z = zs(src)
                lw = log_w[:-1] if src == "train" and log_w is not None else None
                with _progress(show_progress, len(z), f"glossy matrix ({src} candidates)", "candidates") as bar:
                    lc, lcb, mix = stream_source(model, x, z, lpx, plan, device, counts, lw, bar)
                lc_by[src] = lc.cpu()
                result.update(_source_stats(lc, nll, f"_{src}"))
                result[f"n_candidates_{src}"] = len(z)
                if lcb is not None:
                    ci = bounds.bootstrap_intervals(lcb, counts, lpx, bootstrap_level, paired=False)
                    for k in ("glossy_max", "glossy_std", "lower_bound"):
                        result[f"{k}_{src}_ci"] = list(ci[k])
                if mix is not None:
                    result["nll_ba_heldout"] = bounds.heldout_nll(log_w, lpx, mix)
                timing[f"{src}_candidates"] = time.perf_counter() - t1
    finally:
        torch.random.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    if bootstrap > 0 and "nll_ci" not in result and counts is not None:
        result["nll_ci"] = list(bounds.percentile_interval(bounds.resampled_nll(counts.cpu(), log_px),
                                                           bootstrap_level))
    if true_model is not None:
        true_lpx = true_model.log_marginal(x)
        exact_lc = bounds.log_c(true_model.log_likelihood_matrix(x), log_px)
        result["true_nll"] = bounds.nll(true_lpx)
        result["exact_lower_bound"] = nll - exact_lc.max().item()
        result["exact_glossy_max"] = exact_lc.max().item()
    if keep is not None:
        keep.update(log_px=log_px, elbo=elbo, **{f"log_c_{c}": v for c, v in lc_by.items()},
                    **{f"candidates_{c}": (torch.arange(sizes.m[c]) if p is None else p) for c, p in picks.items()})
    timing["total"] = time.perf_counter() - t0
    result["timing_s"] = timing
    result["plan"] = plan.__dict__
    if sub is not None:
        result["subset_seed"] = subset_seed
    keys = ["nll", "elbo", "glossy_max", "glossy_std", "lower_bound", "nll_ba", "nll_ba_heldout"]
    keys += [f"{k}_{c}" for c in candidates for k in ("glossy_max", "glossy_std", "lower_bound")]
    _finite_or_fail(result, keys)
    return result


EVALUATE_KEYS = keyword_only(evaluate)  # what of an eval config evaluate() takes
BUDGET_KEYS = keyword_only(check_budget)
