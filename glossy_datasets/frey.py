"""Frey Faces (Brendan Frey's 1965 frames of one face, 28x20 gray) as in the VampPrior reference.

Two canonical files hold the same 1965 x 560 uint8 frames, each frame a row-major 28x20 image:
- `freyfaces.pkl` from the VampPrior repository, a Python 2 pickle of a list of one (1965, 560) array,
  verified by its recorded SHA-256 and size (read with a loader that accepts numpy arrays only);
- `frey_rawface.mat` from Sam Roweis' data page, MATLAB variable `ff` (560 x 1965). No stable SHA-256
  of it is recorded here (no copy was available to hash): it is verified by format and content
  (`ff` a 560-row matrix of integers 0..255).
With `file=auto` the .pkl is preferred, then the .mat; a download tries the .pkl first.
Pixels k become (k + 0.5) / 256; the frames are shuffled with a fixed seed and split 1565/200/200.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetMeta, OptionError, Splits, Verified, at_least, default_of
from .download import (
    DatasetMissing,
    DigestCache,
    Remote,
    check_options,
    ensure,
    files_info,
    load_pickle,
    read_checked,
    resolve_data_dir,
    verified_of,
)

NAME = "frey"
FILES = {
    "pkl": Remote(NAME, "freyfaces.pkl",
                  "https://raw.githubusercontent.com/jmtomczak/vae_vampprior/master/datasets/Freyfaces/freyfaces.pkl",
                  size=3568521, sha256="3b69410c6a5fd6e03f09012905168be3712373a094a776f7e58fcd0670d2138a",
                  git_blob="032cd9c159728cd43e28041eb2bc547d278c3b80"),  # jmtomczak/vae_vampprior's blob of it
    "mat": Remote(NAME, "frey_rawface.mat", "https://cs.nyu.edu/~roweis/data/frey_rawface.mat",
                  check="MATLAB file whose `ff` is a 560 x N matrix of integers 0..255"),
}
SPLIT_SEED = 14  # shuffle of the frames before the train/val/test split
H, W = 28, 20


def _frames(a, what: str, transpose: bool) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1 - transpose] != H * W or not np.issubdtype(a.dtype, np.number):
        want = f"{H * W} x N" if transpose else f"N x {H * W}"
        raise ValueError(f"wrong shape: {what} is {a.dtype} {a.shape}, expected {want} (one 28x20 frame a "
                         f"{'column' if transpose else 'row'})")
    a = a.T if transpose else a
    if a.min() < 0 or a.max() > 255 or not np.array_equal(a, np.round(a)):
        raise ValueError(f"{what} holds values other than the integers 0..255")
    return a.astype(np.uint8).reshape(-1, H, W)  # each frame row-major 28x20


def read_pkl(path: Path) -> np.ndarray:
    data = load_pickle(path)
    if not isinstance(data, (list, tuple)) or not data:
        raise ValueError(f"expected a list holding one (1965, 560) array, found {type(data).__name__}")
    return _frames(data[0], "the pickled array", transpose=False)


def read_mat(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    mat = loadmat(path, variable_names=["ff"])
    if "ff" not in mat:
        raise ValueError("no variable 'ff'")
    return _frames(mat["ff"], "'ff'", transpose=True)


READERS = {FILES["pkl"].filename: read_pkl, FILES["mat"].filename: read_mat}
FILE_CHOICES = ("auto", *(r.filename for r in FILES.values()))  # the `file` option


def _choose(data_dir: Path, download: bool, file: str,
            cache: DigestCache | None = None) -> tuple[Remote, dict[str, str]]:
    if file == "auto":
        order = [FILES["pkl"], FILES["mat"]]
    else:
        order = [r for r in FILES.values() if r.filename == file]
        if not order:
            raise DatasetError(f"dataset {NAME}: option file={file!r} is not one of {', '.join(FILE_CHOICES)}")
    for r in order:
        if r.path(data_dir).is_file():
            return r, ensure([r], data_dir, False, cache=cache)
    if not download:
        alts = " or ".join(f"{r.filename} (expected at {r.path(data_dir)}; fetch it from {r.url})"
                           for r in order)
        raise DatasetMissing(f"dataset {NAME}: missing file and download=false: put {alts} there by hand, or "
                             f"download with `glossy data fetch dataset={NAME} data_dir={data_dir}` "
                             f"(or run with download=true)", [r.path(data_dir) for r in order])
    errors = []
    for r in order:
        try:
            return r, ensure([r], data_dir, True, {r.filename: READERS[r.filename]})
        except DatasetError as e:
            errors.append(str(e))
    raise DatasetError(" Then: ".join(errors) if len(errors) > 1 else errors[0])


def _check_split(n: int, path: Path, n_train: int, n_val: int, n_test: int) -> None:
    if min(n_train, n_val, n_test) < 1 or n_train + n_val + n_test > n:
        raise DatasetError(f"dataset {NAME}: cannot split {n} frames of {path} into n_train={n_train}, "
                           f"n_val={n_val}, n_test={n_test} (each at least 1, sum at most {n})")


def load(data_dir: Path | None = None, download: bool = True, *, file: str = "auto", n_train: int = 1565,
         n_val: int = 200, n_test: int = 200, split_seed: int = SPLIT_SEED, **options) -> Splits:
    import torch
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r, digests = _choose(data_dir, download, str(file))
    frames = read_checked(r, data_dir, READERS[r.filename])
    _check_split(len(frames), r.path(data_dir), n_train, n_val, n_test)
    x = (frames.astype(np.float32) + 0.5) / 256.0
    x = x[np.random.default_rng(split_seed).permutation(len(x))]
    parts = np.split(x[: n_train + n_val + n_test], [n_train, n_train + n_val])
    train, val, test = (torch.from_numpy(np.ascontiguousarray(p)).unsqueeze(1) for p in parts)
    meta = DatasetMeta(name=NAME, input_type="gray", shape=(1, H, W), dynamic_binarization=False,
                       pseudo_init_mean=0.5, pseudo_init_std=0.02,
                       source=f"Frey Faces {r.filename} from {data_dir / NAME}")
    info = {**files_info([r], data_dir, digests), "split_seed": split_seed}
    return Splits(train, val, test, meta, info)


def verify(data_dir: Path | None = None, *, file: str = "auto", n_train: int = 1565, n_val: int = 200,
           n_test: int = 200, split_seed: int = SPLIT_SEED, digests: DigestCache | None = None,
           **options) -> Verified:
    """The file `load` would read, verified as it verifies it (its frames are read: 3.5 MB), and the split."""
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r, _ = _choose(data_dir, False, str(file), digests)
    frames = read_checked(r, data_dir, READERS[r.filename])
    _check_split(len(frames), r.path(data_dir), n_train, n_val, n_test)
    return Verified({"train": n_train, "val": n_val, "test": n_test},
                    verified_of([r], data_dir))


@dataclass
class Options:
    """dataset.options of `dataset=frey`."""

    file: str = default_of(load, "file")
    n_train: int = default_of(load, "n_train")
    n_val: int = default_of(load, "n_val")
    n_test: int = default_of(load, "n_test")
    split_seed: int = default_of(load, "split_seed")

    def __post_init__(self):
        at_least(self, 1, "n_train", "n_val", "n_test")
        at_least(self, 0, "split_seed")
        if self.file not in FILE_CHOICES:
            raise OptionError(f"dataset.options.file={self.file}: must be one of {', '.join(FILE_CHOICES)}")
