"""The dataset registry: every loader by name, one `load` function, and `register` for datasets of your own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import caltech101, cifar10, frey, histopathology, mnist, omniglot, synthetic
from .base import DatasetError, DatasetMeta, OptionError, Splits
from .download import DatasetCorrupt, DatasetMissing, default_data_dir

DATASETS: dict[str, Callable[..., Splits]] = {
    "synthetic": synthetic.load,
    "mnist": mnist.load,
    "omniglot": omniglot.load,
    "caltech101": caltech101.load,
    "frey": frey.load,
    "histopathology": histopathology.load,
    "cifar10": cifar10.load,
}

# each loader's options, a dataclass beside it (its defaults are the loader's own; `glossy` checks overrides of
# dataset.options against it); a dataset of your own without one takes no options
OPTIONS: dict[str, type] = {name: module.Options for name, module in [
    ("synthetic", synthetic), ("mnist", mnist), ("omniglot", omniglot), ("caltech101", caltech101), ("frey", frey),
    ("histopathology", histopathology), ("cifar10", cifar10)]}

BUILT_IN = frozenset(DATASETS)

__all__ = ["BUILT_IN", "DATASETS", "OPTIONS", "DatasetCorrupt", "DatasetError", "DatasetMeta", "DatasetMissing",
           "OptionError", "Splits", "default_data_dir", "load", "register", "unregister"]


def register(name: str, loader: Callable[..., Splits], options: type | None = None) -> None:
    """Add a dataset of your own under a new name: `loader(data_dir, download, **options)` returns Splits;
    `options`, a dataclass of the keywords it takes. Train on it with `dataset.name=<name>` over any dataset
    config whose options the loader accepts."""
    if name in DATASETS:
        raise DatasetError(f"a dataset named {name!r} is already registered")
    DATASETS[name] = loader
    if options is not None:
        OPTIONS[name] = options


def unregister(name: str) -> None:
    """Remove a dataset that `register` added (the built-in ones stay)."""
    if name not in DATASETS or name in BUILT_IN:
        raise DatasetError(f"{name!r} is not a registered dataset of your own")
    del DATASETS[name]
    OPTIONS.pop(name, None)


def load(name: str, data_dir: str | Path | None = None, download: bool = True, **options) -> Splits:
    """Load a dataset's train/val/test splits by name. Raises DatasetError with a clear message."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name](Path(data_dir).expanduser() if data_dir else None, download, **options)
