"""What one evaluation carries from stage to stage: the model and its images, the settings, the plan, where it
runs, its seeds, its timings, and the numbers found so far. Built once by `EvalContext.build`; each stage of
`glossy.evaluation` takes it, reads what the stages before it left and adds its own."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace

import torch

import glossy.storage as storage

from .candidates import posterior_means, prior_candidates_of, subset
from .journal import ISJournal
from .memory import Plan, Sizes, eval_sizes, plan_within_budget
from .settings import EvalSettings, candidate_list

log = logging.getLogger("glossy")

IN_SAMPLE = EvalSettings(candidates=["test"], heldout=False)  # evaluate()'s settings when none are given


@dataclass
class RunOptions:
    """How one evaluation runs and what it leaves beside its numbers; none of these changes a number (the device
    only up to floating-point noise). show_progress: True, tqdm bars; "log", a log line at each tenth of a long
    stage; False, nothing. keep: a dict to receive the per-point and per-candidate tensors. journal: an
    `ISJournal` that keeps finished importance-sampling points, so that a cut-off evaluation run again goes on
    from them (the same numbers)."""

    device: torch.device | str = "cpu"
    show_progress: bool | str = True
    keep: dict | None = None
    journal: ISJournal | None = None

    @classmethod
    def split(cls, overrides: dict) -> tuple[RunOptions, dict]:
        """(the RunOptions named among keyword arguments, the rest: settings overrides)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in overrides.items() if k in names}), \
            {k: v for k, v in overrides.items() if k not in names}


@dataclass(frozen=True)
class Seeds:
    """Every seed of one evaluation, from eval.seed and eval.subset_seed: which images are evaluated and give
    candidates (seeded subsets where capped), and the random streams of importance sampling, of the held-out
    fit's importance sampling and of the prior's samples."""

    seed: int
    subset_seed: int

    def subset(self, of: str) -> int:
        """The seed of the random subset of the evaluated points ("points"), of each source's candidate images,
        and of the held-out fit's validation images ("fit")."""
        return self.subset_seed + ("points", "test", "train", "valid", "fit").index(of)

    @property
    def importance(self) -> int:
        return self.seed

    @property
    def heldout(self) -> int:
        return self.seed + 1

    @property
    def prior(self) -> int:
        return self.seed + 2


class Timer:
    """Wall seconds of named steps: `with timer("sandwich"): ...`; `timer.seconds` is result.json's timing_s."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0


@dataclass
class EvalContext:
    """One evaluation's fixed parts (built once) and what its stages have found so far."""

    model: object
    x: torch.Tensor  # the evaluated points (a seeded subset where eval.max_points caps them)
    train_x: torch.Tensor | None
    valid_x: torch.Tensor | None
    settings: EvalSettings
    run: RunOptions
    device: torch.device
    seeds: Seeds
    sizes: Sizes
    plan: Plan
    ba_bytes: int  # what the memory budget leaves for Blahut-Arimoto beside the kept matrices
    candidates: list[str]
    points: torch.Tensor | None  # the indices of the evaluated points, None: all
    picks: dict  # source -> the indices of the images its candidates come from (None: all)
    timer: Timer = field(default_factory=Timer)
    result: dict = field(default_factory=dict)
    log_c: dict = field(default_factory=dict)  # source -> log c of its candidates [M]
    log_px: torch.Tensor | None = None  # [N] float64, on the CPU
    lpx: torch.Tensor | None = None  # the same on the device
    elbo: torch.Tensor | None = None  # [N] float64, the ELBO estimate of each point
    weights: torch.Tensor | None = None  # the jackknife's group weights, None: no intervals
    log_w: torch.Tensor | None = None  # the held-out prior's log weights (the training atoms, then p(z))
    _codes: dict = field(default_factory=dict)

    @classmethod
    def build(cls, model, x, settings: EvalSettings | None, train_x, valid_x, run: RunOptions,
              overrides: dict) -> EvalContext:
        s = replace(IN_SAMPLE if settings is None else settings, **overrides)
        seeds = Seeds(s.seed, s.subset_seed)
        points = subset(len(x), s.max_points, seeds.subset("points"))
        x = x if points is None else x[points]
        sizes = eval_sizes(model, len(x), s, 0 if train_x is None else len(train_x),
                           0 if valid_x is None else len(valid_x))
        candidates = list(dict.fromkeys(candidate_list(s.candidates)))
        images = {"test": x, "train": train_x, "valid": valid_x}
        picks = {c: subset(len(images[c]), sizes.m[c], seeds.subset(c)) for c in candidates if c != "prior"}
        return cls(model, x, train_x, valid_x, s, run, torch.device(run.device), seeds, sizes,
                   plan_within_budget(model, sizes, s.is_samples, s.memory_budget_gb),
                   max(0, int(s.memory_budget_gb * 2**30) - sizes.reserved_bytes()), candidates, points, picks)

    @property
    def n(self) -> int:
        return self.sizes.n

    @property
    def nll(self) -> float:
        return self.result["nll"]

    @property
    def level(self) -> float:
        return self.settings.interval_level

    def images(self, src: str) -> torch.Tensor:
        imgs = {"test": self.x, "train": self.train_x, "valid": self.valid_x}[src]
        pick = self.picks.get(src)
        return imgs if pick is None else imgs[pick]

    def codes(self, src: str) -> torch.Tensor:
        """The candidates of a source: the posterior means of its images, or the prior's samples (seeded). The
        training codes serve twice with the held-out sandwich (its atoms, the train source): computed once."""
        if src == "prior":
            torch.manual_seed(self.seeds.prior)
            return prior_candidates_of(self.model, self.sizes.m["prior"], self.device)
        if src == "train" and "train" in self._codes:
            return self._codes["train"]
        if src == "train" and "train" not in self.picks:  # the held-out atoms alone
            pick = subset(len(self.train_x), self.sizes.m_atoms, self.seeds.subset("train"))
            imgs = self.train_x if pick is None else self.train_x[pick]
        else:
            imgs = self.images(src)
        z = posterior_means(self.model, imgs, self.device)
        if src == "train":
            self._codes["train"] = z
        return z

    def describe(self) -> None:
        """The log lines that say what this evaluation will do and what it costs."""
        s, sizes, n = self.settings, self.sizes, self.n
        log.info("evaluating N=%d points, candidates %s, S=%d samples on %s%s; %s", n,
                 ", ".join(f"{c} M={sizes.m[c]}" for c in self.candidates), s.is_samples, self.device,
                 f"; held-out prior on {sizes.m_atoms} training atoms fitted on {sizes.n_fit} validation images"
                 if s.heldout else "", self.plan.describe())
        ba = [f"in-sample {sizes.m['test'] + 1} x {n}: {storage.ba_storage(sizes.m['test'] + 1, n, self.ba_bytes)}"
              ] if sizes.m.get("test") else []
        if s.heldout:
            ba.append(f"held-out {sizes.m_atoms + 1} x {sizes.n_fit}: "
                      f"{storage.ba_storage(sizes.m_atoms + 1, sizes.n_fit, self.ba_bytes)}")
        if ba:
            log.info("Blahut-Arimoto within the budget's remaining %.3g GiB (kept matrices %.3g GiB): %s",
                     self.ba_bytes / 2**30, sizes.reserved_bytes() / 2**30, "; ".join(ba))
        ar, m_all, n_is = self.model.autoregressive, sum(sizes.m.values()) + sizes.m_atoms, n + sizes.n_fit
        log.info("cost: importance sampling %d decoder passes, glossy matrices %d %s; about %.3g GFLOP",
                 n_is * s.is_samples, m_all * n if ar else m_all,
                 "decoder passes (M x N, autoregressive)" if ar else "decoder passes (M) + M x N products",
                 2e-9 * self.model.decoder_macs() * (n_is * s.is_samples + (m_all * n if ar else m_all)))
