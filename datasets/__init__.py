"""glossy's datasets: one small loader per dataset and one `load` function."""

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

__all__ = ["DATASETS", "DatasetCorrupt", "DatasetError", "DatasetMeta", "DatasetMissing", "Splits",
           "default_data_dir", "load"]


def load(name: str, data_dir: str | Path | None = None, download: bool = True, **options) -> Splits:
    """Load a dataset's train/val/test splits by name. Raises DatasetError with a clear message."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name](Path(data_dir).expanduser() if data_dir else None, download, **options)
