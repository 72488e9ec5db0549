"""The memory planner: how many points, candidates and held-out images an evaluation uses, and the chunks and
blocks that keep its arrays within eval.memory_budget_gb (or the one-line refusal when nothing fits)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import GlossyError
from .settings import HELDOUT_FIT_POINTS, SOURCE_HELP, SOURCES, EvalSettings, candidate_list


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


def eval_sizes(model, n_total: int, s: EvalSettings, n_train: int = 0, n_valid: int = 0) -> Sizes:
    """The sizes an evaluation of `n_total` points with settings `s` uses (`n_train` / `n_valid`: the training and
    validation images there are to take candidates from and fit the held-out prior on): what `evaluate` and
    `check_budget` both plan from."""
    candidates = candidate_list(s.candidates)
    ar = s.autoregressive_max_candidates if model.autoregressive else None
    n = n_total if s.max_points is None else min(n_total, s.max_points)
    avail = {"test": n, "train": n_train, "valid": n_valid,
             "prior": n if s.prior_candidates is None else int(s.prior_candidates)}
    unknown = [c for c in candidates if c not in SOURCES]
    if unknown:
        raise GlossyError(f"eval.candidates={candidates}: unknown source {unknown[0]!r}; valid: "
                          f"{', '.join(SOURCES)} ({SOURCE_HELP})")
    missing = [c for c in candidates if avail[c] < 1]
    if missing:
        raise GlossyError(f"eval.candidates includes {missing[0]!r} but there are no {missing[0]} images to take "
                          f"candidates from; drop it from eval.candidates")
    m = {c: _cap(avail[c], s.max_candidates, ar) for c in candidates}
    n_fit = m_atoms = 0
    if s.heldout:
        if n_train < 1 or n_valid < 1:
            raise GlossyError("eval.heldout=true needs training images (the atoms) and validation images (to fit "
                              "the prior on); set eval.heldout=false for data without them")
        n_fit = n_valid if s.max_points is None else min(n_valid, s.max_points)
        n_fit = min(n_fit, HELDOUT_FIT_POINTS if s.heldout_fit_points is None else s.heldout_fit_points)
        m_atoms = _cap(n_train, s.max_candidates, ar)
    return Sizes(n, m, n_fit, m_atoms)


def plan_within_budget(model, sizes: Sizes, is_samples: int, memory_budget_gb: float) -> Plan:
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


def check_budget(model, n_total: int, settings: EvalSettings, n_train: int = 0, n_valid: int = 0) -> Plan:
    """The plan `evaluate` will use on `n_total` points with these settings, or the GlossyError it would
    raise when the memory budget cannot hold it. Cheap: training calls it before its first epoch, so that
    a budget that cannot fit fails at once rather than after hours of training."""
    return plan_within_budget(model, eval_sizes(model, n_total, settings, n_train, n_valid), settings.is_samples,
                              settings.memory_budget_gb)
