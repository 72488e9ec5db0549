"""The dataset registry: every loader by name, one `load` function, and `register` for datasets of your own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import caltech101, cifar10, frey, histopathology, mnist, npzfile, omniglot, synthetic
from .base import DatasetError, DatasetMeta, OptionError, Splits, Verified, verified_files
from .download import DatasetCorrupt, DatasetMissing, DigestCache, default_data_dir

_BUILT_IN_MODULES = {"synthetic": synthetic, "mnist": mnist, "omniglot": omniglot, "caltech101": caltech101,
                     "frey": frey, "histopathology": histopathology, "cifar10": cifar10, "file": npzfile}

DATASETS: dict[str, Callable[..., Splits]] = {name: m.load for name, m in _BUILT_IN_MODULES.items()}

# each loader's options, a dataclass beside it (its defaults are the loader's own; `glossy` checks overrides of
# dataset.options against it); a dataset of your own without one takes no options
OPTIONS: dict[str, type] = {name: m.Options for name, m in _BUILT_IN_MODULES.items()}

# each loader's `verify`: its files present and verified, and its split sizes, without building the splits (no
# torch): what `glossy data` lists. A dataset of your own without one is verified by loading it
VERIFIERS: dict[str, Callable[..., Verified]] = {name: m.verify for name, m in _BUILT_IN_MODULES.items()}

BUILT_IN = frozenset(DATASETS)

__all__ = ["BUILT_IN", "DATASETS", "OPTIONS", "DatasetCorrupt", "DatasetError", "DatasetMeta", "DatasetMissing",
           "OptionError", "Splits", "Verified", "default_data_dir", "load", "register", "unregister", "verify"]


def register(name: str, loader: Callable[..., Splits], options: type | None = None,
             verify: Callable[..., Verified] | None = None) -> None:
    """Add a dataset of your own under a new name: `loader(data_dir, download, **options)` returns Splits;
    `options`, a dataclass of the keywords it takes; `verify(data_dir, digests=None, **options)`, optional,
    returns Verified without building the splits (else `glossy data` loads it). Train on it with
    `dataset.name=<name>` over any dataset config whose options the loader accepts."""
    if name in DATASETS:
        raise DatasetError(f"a dataset named {name!r} is already registered")
    DATASETS[name] = loader
    if options is not None:
        OPTIONS[name] = options
    if verify is not None:
        VERIFIERS[name] = verify


def unregister(name: str) -> None:
    """Remove a dataset that `register` added (the built-in ones stay)."""
    if name not in DATASETS or name in BUILT_IN:
        raise DatasetError(f"{name!r} is not a registered dataset of your own")
    del DATASETS[name]
    OPTIONS.pop(name, None)
    VERIFIERS.pop(name, None)


def _root(name: str, data_dir: str | Path | None) -> Path | None:
    """The data folder a loader gets (None: its default); DatasetError for a name that is not registered."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return Path(data_dir).expanduser() if data_dir else None


def load(name: str, data_dir: str | Path | None = None, download: bool = True, **options) -> Splits:
    """Load a dataset's train/val/test splits by name. Raises DatasetError with a clear message."""
    root = _root(name, data_dir)  # before DATASETS[name]: an unknown name is a DatasetError, not a KeyError
    return DATASETS[name](root, download, **options)


def verify(name: str, data_dir: str | Path | None = None, digests: DigestCache | None = None, **options) -> Verified:
    """A dataset's files present and verified, and its split sizes, without building the splits and without
    downloading. Raises DatasetError (DatasetMissing, DatasetCorrupt) with a clear message, as `load` does."""
    root = _root(name, data_dir)
    if name in VERIFIERS:
        return VERIFIERS[name](root, digests=digests, **options)
    splits = DATASETS[name](root, False, **options)
    return Verified(splits.sizes(), verified_files(splits.info))
