"""Range checks on a composed config, so that a mistyped value fails at once with one clear message."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import GlossyError
from .evaluate import SOURCE_HELP, SOURCES, candidate_list


def _plain(v):
    return OmegaConf.to_container(v) if isinstance(v, ListConfig) else v


def _check(cfg: DictConfig, prefix: str, key: str, kind, lo=None, allow_none: bool = False) -> None:
    v = cfg.get(key)
    name = f"{prefix}.{key}"
    if v is None and allow_none:
        return
    ok_type = isinstance(v, kind) and not isinstance(v, bool) or (kind is float and isinstance(v, int)
                                                                  and not isinstance(v, bool))
    if not ok_type:
        what = "an integer" if kind is int else "a number"
        raise GlossyError(f"{name}={v!r} must be {what}")
    if lo is not None and v < lo:
        raise GlossyError(f"{name}={v} is out of range: it must be at least {lo}")


def validate_train(cfg: DictConfig) -> None:
    t = cfg.train
    for key, lo in [("epochs", 1), ("batch_size", 1), ("warmup", 0), ("early_stopping", 0),
                    ("val_batch_size", 1), ("trajectory_every", 0), ("trajectory_points", 1),
                    ("trajectory_samples", 1), ("grid", 0)]:
        _check(t, "train", key, int, lo)
    _check(t, "train", "batches_per_epoch", int, 1, allow_none=True)
    _check(t, "train", "val_points", int, 1, allow_none=True)
    _check(t, "train", "lr", float, 0)
    if not t.lr > 0:
        raise GlossyError(f"train.lr={t.lr} must be positive")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise GlossyError(f"seed={cfg.seed!r} must be an integer")


def validate_eval(e: DictConfig) -> None:
    _check(e, "eval", "is_samples", int, 1)
    _check(e, "eval", "max_points", int, 1, allow_none=True)
    _check(e, "eval", "max_candidates", int, 1, allow_none=True)
    _check(e, "eval", "autoregressive_max_candidates", int, 1, allow_none=True)
    _check(e, "eval", "bootstrap", int, 0)
    _check(e, "eval", "ba_iters", int, 0)
    _check(e, "eval", "ba_tol", float, 0)
    _check(e, "eval", "memory_budget_gb", float, 0)
    if not e.memory_budget_gb > 0:
        raise GlossyError(f"eval.memory_budget_gb={e.memory_budget_gb} must be positive")
    if not 0 < e.bootstrap_level < 1:
        raise GlossyError(f"eval.bootstrap_level={e.bootstrap_level} must lie strictly between 0 and 1")
    _check(e, "eval", "prior_candidates", int, 1, allow_none=True)
    if not isinstance(e.heldout, bool):
        raise GlossyError(f"eval.heldout={e.heldout!r} must be true or false")
    cands = candidate_list(e.candidates) if isinstance(e.candidates, (str, Sequence)) else None
    if not cands or any(c not in SOURCES for c in cands):
        raise GlossyError(f"eval.candidates={_plain(e.candidates)} must be a non-empty list of {', '.join(SOURCES)} "
                          f"({SOURCE_HELP}), e.g. eval.candidates=[test,train]")
    if e.split not in ("test", "val", "train"):
        raise GlossyError(f"eval.split={e.split!r} must be test, val or train")
