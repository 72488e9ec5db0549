"""The evaluation's one typed settings object (`eval.*` of the configuration, `glossy.evaluate`'s keywords),
the candidate sources it names, and the range checks every schema dataclass shares. No torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

SOURCES = ("test", "train", "valid", "prior")
SOURCE_HELP = ("test: the posterior means of the evaluated images (the paper's text, in-sample); train / valid: "
               "those of the training / validation images; prior: samples from the model's prior")


# The held-out fit's default cost (eval.heldout_fit_points / heldout_is_samples left null): at most this many
# validation images, at most this many importance samples each (never more than eval.is_samples). The cheapest
# setting measured to move nll_ba_heldout by less than its interval's half-width on both rows studied, static
# MNIST (10^4 validation images) and Caltech 101 (2264): docs/results.md, "What the held-out fit's cost buys"
HELDOUT_FIT_POINTS = 1000
HELDOUT_IS_SAMPLES = 500


def heldout_samples(is_samples: int, heldout_is_samples: int | None) -> int:
    """The held-out fit's S: eval.heldout_is_samples, or by default the smaller of is_samples and
    HELDOUT_IS_SAMPLES."""
    return heldout_is_samples if heldout_is_samples is not None else min(is_samples, HELDOUT_IS_SAMPLES)


def candidate_list(candidates) -> list[str]:
    """eval.candidates as a list of source names (a single name is accepted too)."""
    return [candidates] if isinstance(candidates, str) else [str(c) for c in candidates]


def at_least(node, prefix: str, lo, *names: str, optional: bool = False) -> None:
    for n in names:
        v = getattr(node, n)
        if v is None and optional:
            continue
        if v is None or v < lo:
            key = f"{prefix}.{n}" if prefix else n
            raise ConfigError(f"{key}={v}: must be at least {lo}" + (" (or null)" if optional else ""))


def positive(node, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(node, n)
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{prefix}.{n}={v}: must be a positive number")


@dataclass
class EvalSettings:
    is_samples: int = 5000  # S, importance samples per data point (the paper's 5000)
    split: str = "test"  # test | val | train
    max_points: int | None = None  # cap N with a random subset (seeded by subset_seed); null: all
    # where the candidates z_i come from: test (posterior means of the evaluated images, the paper's text),
    # train (of all training images: what the paper's Table 1 shows), valid, prior (prior samples)
    candidates: Any = field(default_factory=lambda: ["test", "train"])
    heldout: bool = True  # a BA prior on the training codes + p(z), fitted on the validation images
    max_candidates: int | None = None  # cap M of every source with a seeded random subset; null: all
    prior_candidates: int | None = None  # candidates=prior: how many prior samples (null: N)
    autoregressive_max_candidates: int | None = 100  # PixelHVAE: M x N decoder passes, so M is capped
    subset_seed: int = 0
    seed: int = 1234  # importance sampling seed
    memory_budget_gb: float = 4.0  # block sizes keep the evaluation's arrays under this budget
    jackknife: int = 20  # groups of the delete-a-group jackknife behind the intervals (0: no intervals)
    interval_level: float = 0.95
    ba_iters: int = 500  # passes over a best prior's matrix at most (working-set pricing passes or BA steps)
    ba_tol: float = 1.0e-4  # stop when the BA duality gap (nats) is below this
    # the sup of log c searched by gradient ascent from the best test candidates (0: off): its bound
    # (lower_bound_searched) and the found codes as atoms of the in-sample prior (nll_ba)
    sup_search_steps: int = 0
    sup_search_starts: int = 8
    # the held-out fit's cost: how many validation images it is fitted on (a seeded subset, at most max_points; null:
    # HELDOUT_FIT_POINTS) and their importance samples (null: the smaller of is_samples and HELDOUT_IS_SAMPLES)
    heldout_fit_points: int | None = None
    heldout_is_samples: int | None = None

    def __post_init__(self):
        at_least(self, "eval", 1, "is_samples")
        at_least(self, "eval", 1, "max_points", "max_candidates", "prior_candidates",
                  "autoregressive_max_candidates", optional=True)
        at_least(self, "eval", 0, "jackknife", "ba_iters", "subset_seed", "seed", "sup_search_steps")
        at_least(self, "eval", 1, "sup_search_starts")
        at_least(self, "eval", 1, "heldout_fit_points", "heldout_is_samples", optional=True)
        positive(self, "eval", "memory_budget_gb")
        if not (self.ba_tol >= 0 and math.isfinite(self.ba_tol)):
            raise ConfigError(f"eval.ba_tol={self.ba_tol}: must be at least 0")
        if self.jackknife == 1:
            raise ConfigError("eval.jackknife=1: the jackknife needs at least 2 groups (or 0: no intervals)")
        if not 0 < self.interval_level < 1:
            raise ConfigError(f"eval.interval_level={self.interval_level}: must lie strictly between 0 and 1")
        if self.split not in ("test", "val", "train"):
            raise ConfigError(f"eval.split={self.split}: must be test, val or train")
        cands = candidate_list(self.candidates)
        if not cands or any(c not in SOURCES for c in cands):
            shown = self.candidates if isinstance(self.candidates, str) else f"[{','.join(map(str, self.candidates))}]"
            raise ConfigError(f"eval.candidates={shown}: must be a non-empty list of {', '.join(SOURCES)} "
                              f"({SOURCE_HELP}), e.g. eval.candidates=[test,train]")
