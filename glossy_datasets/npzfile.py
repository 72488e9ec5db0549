"""A dataset of your own from one .npz file (`dataset=file dataset.options.path=<file.npz>`): arrays `train`,
`valid` (or `val`, `validation`) and `test`, images in [0, 1] as [N, H, W], [N, C, H, W] or [N, D], and the input
type (`binary`, `gray`: 256 levels, `continuous`) from the option, else from the file's `input_type` entry, else
`binary` when every value is 0 or 1. Every problem with the file is one DatasetError naming it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetMeta, OptionError, Splits, default_of

NAME = "file"
SPLIT_KEYS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}
INPUT_TYPES = ("auto", "binary", "gray", "continuous")


def _images(arrays, key_options: tuple[str, ...], path: Path) -> np.ndarray:
    key = next((k for k in key_options if k in arrays), None)
    if key is None:
        raise DatasetError(f"dataset file: {path} has no {' / '.join(key_options)} array (it has "
                           f"{', '.join(arrays.files) or 'none'})")
    a = arrays[key]
    if a.ndim not in (2, 3, 4) or len(a) == 0 or not np.issubdtype(a.dtype, np.number):
        raise DatasetError(f"dataset file: {path}'s {key} is {a.dtype} {list(a.shape)}; expected a non-empty "
                           f"number array [N, H, W], [N, C, H, W] or [N, D]")
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DatasetError(f"dataset file: {path}'s {key} holds values outside [0, 1] (from {a.min()} to {a.max()})")
    return a.reshape(len(a), 1, 1, -1) if a.ndim == 2 else a.reshape(len(a), 1, *a.shape[1:]) if a.ndim == 3 else a


def _input_type(option: str, arrays, parts: list[np.ndarray], path: Path) -> str:
    """The input type the option or the file's entry says (a binary one checked against the values), else binary
    where every value is 0 or 1."""
    said = option if option != "auto" else str(arrays["input_type"]) if "input_type" in arrays.files else None
    if said is not None and said not in INPUT_TYPES[1:]:
        raise DatasetError(f"dataset file: {path}'s input_type is {said!r}; expected one of "
                           f"{', '.join(INPUT_TYPES[1:])}")
    binary = said in (None, "binary") and all(np.isin(p, (0.0, 1.0)).all() for p in parts)
    if said == "binary" and not binary:
        raise DatasetError(f"dataset file: {path} is said to be binary but holds values other than 0 and 1")
    if said is None and not binary:
        raise DatasetError(f"dataset file: {path} holds non-binary images and says nothing of their type: add "
                           f"dataset.options.input_type=gray (256 levels) or continuous")
    return said or "binary"


def load(data_dir: Path | None = None, download: bool = True, *, path: str = "", input_type: str = "auto",
         **options) -> Splits:
    import torch

    from .download import check_options

    check_options(NAME, options, ())
    if not path:
        raise DatasetError("dataset file: name the file with dataset.options.path=<file.npz>")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"dataset file: {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as arrays:
            parts = [_images(arrays, SPLIT_KEYS[s], p) for s in ("train", "val", "test")]
            kind = _input_type(input_type, arrays, parts, p)
    except (OSError, ValueError) as e:  # not a .npz, a truncated one, an object array
        raise DatasetError(f"dataset file: {p} is not a readable .npz of arrays ({e})") from e
    shapes = {tuple(a.shape[1:]) for a in parts}
    if len(shapes) != 1:
        raise DatasetError(f"dataset file: {p}'s splits have images of different shapes: "
                           f"{', '.join(str(list(s)) for s in sorted(shapes))}")
    train, val, test = (torch.from_numpy(np.ascontiguousarray(a)) for a in parts)
    meta = DatasetMeta(name=NAME, input_type=kind, shape=tuple(train.shape[1:]), source=f"the file {p.resolve()}")
    checked = "its arrays read and checked (splits, shapes, values in [0, 1], input type)"
    return Splits(train, val, test, meta, {"files": {p.name: {"path": str(p.resolve()), "verified_by": checked}}})


@dataclass
class Options:
    """dataset.options of `dataset=file`."""

    path: str = default_of(load, "path")
    input_type: str = default_of(load, "input_type")

    def __post_init__(self):
        if self.input_type not in INPUT_TYPES:
            raise OptionError(f"dataset.options.input_type={self.input_type}: must be one of {', '.join(INPUT_TYPES)}")


def verify(data_dir: Path | None = None, *, digests=None, **options):
    """The file loaded and checked (there is nothing to download)."""
    from .base import Verified, verified_files

    splits = load(data_dir, False, **options)
    return Verified(splits.sizes(), verified_files(splits.info))
