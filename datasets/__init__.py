"""glossy's datasets: one small loader per dataset and one `load` function."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import synthetic
from .base import DatasetError, DatasetMeta, Splits

DATASETS: dict[str, Callable[..., Splits]] = {"synthetic": synthetic.load}

__all__ = ["DATASETS", "DatasetError", "DatasetMeta", "Splits", "load"]


def load(name: str, data_dir: str | Path | None = None, download: bool = True, **options) -> Splits:
    """Load a dataset's train/val/test splits by name. Raises DatasetError with a clear message."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name](Path(data_dir).expanduser() if data_dir else None, download, **options)
