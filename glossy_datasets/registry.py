"""The dataset registry: every loader by name, one `load` function, and `register` for datasets of your own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import caltech101, cifar10, frey, histopathology, mnist, omniglot, synthetic
from .base import DatasetError, DatasetMeta, Splits
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

BUILT_IN = frozenset(DATASETS)

__all__ = ["BUILT_IN", "DATASETS", "DatasetCorrupt", "DatasetError", "DatasetMeta", "DatasetMissing", "Splits",
           "default_data_dir", "load", "register", "unregister"]


def register(name: str, loader: Callable[..., Splits]) -> None:
    """Add a dataset of your own under a new name: `loader(data_dir, download, **options)` returns Splits.
    Train on it with `dataset.name=<name>` over any dataset config whose options the loader accepts."""
    if name in DATASETS:
        raise DatasetError(f"a dataset named {name!r} is already registered")
    DATASETS[name] = loader


def unregister(name: str) -> None:
    """Remove a dataset that `register` added (the built-in ones stay)."""
    if name not in DATASETS or name in BUILT_IN:
        raise DatasetError(f"{name!r} is not a registered dataset of your own")
    del DATASETS[name]


def load(name: str, data_dir: str | Path | None = None, download: bool = True, **options) -> Splits:
    """Load a dataset's train/val/test splits by name. Raises DatasetError with a clear message."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name](Path(data_dir).expanduser() if data_dir else None, download, **options)
