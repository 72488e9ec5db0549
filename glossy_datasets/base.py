"""What every dataset offers: splits as float tensors [N, C, H, W] in [0, 1], and its metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch



class DatasetError(Exception):
    """A dataset cannot be provided; the message says what is missing and how to fix it."""


class OptionError(DatasetError):
    """A dataset option out of its range: one line naming dataset.options.<key>, the value and what is allowed."""


def default_of(fn, name: str):
    """The default of keyword `name` in `fn`'s signature: a loader's options take their defaults from `load`."""
    import inspect

    return inspect.signature(fn).parameters[name].default


def at_least(opts, lo, *names: str) -> None:
    for n in names:
        v = getattr(opts, n)
        if v is None or v < lo:
            raise OptionError(f"dataset.options.{n}={v}: must be at least {lo}")


@dataclass(frozen=True)
class DatasetMeta:
    name: str
    input_type: str  # "binary" | "gray" | "continuous"
    shape: tuple[int, int, int]  # (C, H, W)
    dynamic_binarization: bool = False  # train split re-binarised per batch
    pseudo_init_mean: float = 0.05  # VampPrior pseudo-input initialisation of the reference
    pseudo_init_std: float = 0.01
    true_model: Any = None  # an object with log_likelihood_matrix(x) and log_marginal(x), if known
    source: str = ""

    def __post_init__(self):
        if self.input_type not in ("binary", "gray", "continuous"):
            raise ValueError(f"input_type must be binary, gray or continuous, not {self.input_type!r}")


@dataclass
class Verified:
    """What a loader's `verify` found without building the splits: their sizes and, for every file, its path
    and how it was verified (`verified_by`: sha256, md5, content sha256 or format)."""

    sizes: dict[str, int]
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def verified_by(self) -> str:
        return ", ".join(sorted({f.get("verified_by", "?") for f in self.files.values()}))


def verified_files(info: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{file: {path, verified_by}} of a loaded Splits' info (the part `verify` reports too)."""
    return {n: {"path": str(f["path"]), "verified_by": str(f.get("verified_by", "?"))}
            for n, f in info.get("files", {}).items()}


@dataclass
class Splits:
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    meta: DatasetMeta
    info: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
