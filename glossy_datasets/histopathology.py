"""Histopathology gray (Tomczak & Welling, 2016): 28x28 gray patches, the published three splits.

`histopathology.pkl` is a Python 2 pickle of a dict with `training`, `validation` and `test` arrays of
gray levels in [0, 1] (each image row-major 28x28); the canonical download is
`histopathology.pkl.tar.gz`, read directly (the .pkl inside is never extracted to disk). Either file
in `<data_dir>/histopathology/` is used, the .pkl first. Values are clipped to [1/512, 1 - 1/512] as in
the reference. No stable SHA-256 of either file is recorded here (no copy was available to hash): they
are verified by format and content (a gzip tar holding histopathology.pkl; the dict's three splits
28x28 images with values in [0, 1]); the pickle is read with a loader that accepts numpy arrays only.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetMeta, OptionError, Splits, Verified, default_of
from .download import (
    DatasetMissing,
    DigestCache,
    Remote,
    check_options,
    digest_of,
    ensure,
    files_info,
    load_pickle,
    read_checked,
    resolve_data_dir,
    verified_of,
)

NAME = "histopathology"
_URL = ("https://raw.githubusercontent.com/jmtomczak/vae_householder_flow/master/datasets/histopathologyGray/"
        "histopathology.pkl.tar.gz")
FILES = {
    "tar": Remote(NAME, "histopathology.pkl.tar.gz", _URL,
                  check="gzip tar holding histopathology.pkl with training/validation/test 28x28 images "
                        "in [0, 1]",
                  git_blob="40e100f65969106cbcf3c0f6f29e70e8e7e14fe3"),  # jmtomczak/vae_householder_flow's blob
    "pkl": Remote(NAME, "histopathology.pkl", _URL,
                  check="pickle of a dict with training/validation/test 28x28 images in [0, 1]"),
}
KEYS = {"train": "training", "val": "validation", "test": "test"}
CLIP = 1.0 / 512.0


def _splits(data, clip: float = CLIP) -> dict[str, np.ndarray]:
    if not isinstance(data, dict):
        raise ValueError(f"expected a dict with keys {', '.join(KEYS.values())}, found {type(data).__name__}")
    out = {}
    for split, key in KEYS.items():
        if key not in data:
            raise ValueError(f"no key {key!r} (found {', '.join(map(str, data))})")
        a = np.asarray(data[key])
        if a.size == 0 or a.size % 784 or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"wrong shape: {key!r} is {a.dtype} {a.shape}, expected N 28x28 images")
        a = a.astype(np.float32).reshape(-1, 28, 28)  # row-major 28x28
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"{key!r} holds values outside [0, 1] (min {a.min()}, max {a.max()})")
        out[split] = np.clip(a, clip, 1.0 - clip)
    return out


def read_pkl(path: Path, clip: float = CLIP) -> dict[str, np.ndarray]:
    return _splits(load_pickle(path), clip)


def read_tar(path: Path, clip: float = CLIP) -> dict[str, np.ndarray]:
    with tarfile.open(path, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "histopathology.pkl"]
        if not members:
            raise ValueError("the archive holds no histopathology.pkl")
        raw = tar.extractfile(members[0]).read()
    return _splits(load_pickle(raw), clip)


READERS = {FILES["tar"].filename: read_tar, FILES["pkl"].filename: read_pkl}


def _present(data_dir: Path, download: bool) -> Remote:
    """The file to read: the .pkl when present, else the .tar.gz (DatasetMissing when neither is there and
    download=false)."""
    pkl, tgz = FILES["pkl"], FILES["tar"]
    r = pkl if pkl.path(data_dir).is_file() else tgz
    if not r.path(data_dir).is_file() and not download:
        raise DatasetMissing(
            f"dataset {NAME}: missing file and download=false: put {tgz.filename} at {tgz.path(data_dir)} "
            f"(or the {pkl.filename} inside it at {pkl.path(data_dir)}); fetch it from {tgz.url}, or "
            f"download with `glossy data fetch dataset={NAME} data_dir={data_dir}` (or run with "
            f"download=true)",
            [tgz.path(data_dir), pkl.path(data_dir)])
    return r


def load(data_dir: Path | None = None, download: bool = True, *, clip: float = CLIP, **options) -> Splits:
    """clip: values are clipped to [clip, 1 - clip] (the reference: 1/512)."""
    import torch
    check_options(NAME, options, ())
    if not 0 <= float(clip) < 0.5:
        raise DatasetError(f"dataset {NAME}: option clip={clip} must be in [0, 0.5)")
    data_dir = resolve_data_dir(data_dir)
    r = _present(data_dir, download)
    digests = ensure([r], data_dir, download, {r.filename: READERS[r.filename]})
    arrays = read_checked(r, data_dir, lambda p: READERS[r.filename](p, float(clip)))
    x = {k: torch.from_numpy(v).unsqueeze(1) for k, v in arrays.items()}
    meta = DatasetMeta(name=NAME, input_type="gray", shape=(1, 28, 28), dynamic_binarization=False,
                       pseudo_init_mean=0.4, pseudo_init_std=0.05,
                       source=f"Histopathology gray {r.filename} from {data_dir / NAME}")
    info = files_info([r], data_dir, digests)
    return Splits(x["train"], x["val"], x["test"], meta, info)


def verify(data_dir: Path | None = None, *, clip: float = CLIP, digests: DigestCache | None = None,
           **options) -> Verified:
    """The file `load` would read, present and of the right format (it is read: no SHA-256 is recorded), and
    its split sizes; with a DigestCache, an unchanged file that passed is not read again."""
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r = _present(data_dir, False)
    ensure([r], data_dir, False, cache=digests)
    sizes = digest_of(r.path(data_dir), "histopathology-format",
                      lambda p: {k: len(v) for k, v in read_checked(r, data_dir, READERS[r.filename]).items()},
                      digests)
    return Verified({k: int(v) for k, v in sizes.items()}, verified_of([r], data_dir))


@dataclass
class Options:
    """dataset.options of `dataset=histopathology`."""

    clip: float = default_of(load, "clip")

    def __post_init__(self):
        if not 0 < self.clip < 0.5:
            raise OptionError(f"dataset.options.clip={self.clip}: must lie strictly between 0 and 0.5")
