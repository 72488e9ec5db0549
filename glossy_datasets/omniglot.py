"""Omniglot as in Burda et al.'s IWAE code and the VampPrior reference: `chardata.mat`, 28x28 gray.

`data` (784 x 24345) is the training set and `testdata` (784 x 8070) the test set; every column is
one 28x28 image stored column-major (MATLAB order). The training set is shuffled with a fixed seed and
its last `n_validation` (1345) images become the validation set. The training images stay gray and are
binarised dynamically (a fresh Bernoulli draw per minibatch, by the trainer); validation and test are
binarised once here as the VampPrior reference does it: numpy's legacy generator seeded with 777 draws one
Bernoulli per pixel of the validation images, then of the test images, each image's pixels in the reference's
order (its 784-vector, which is our image flattened row by row). One uniform is drawn per pixel whatever its
gray value, so the binary test set is the reference's bit for bit whichever images the (unseeded, in the
reference) shuffle put into the validation set.

No copy of `chardata.mat` was here to hash, so it is verified by its git blob id in the repository that serves it
(a content hash: sha1 of "blob <size>\\0" and the bytes), and by its format and content: a MATLAB file whose
`data`/`testdata` are 784-row matrices of values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetMeta, Splits, Verified, at_least, default_of
from .download import (
    DigestCache,
    Remote,
    check_options,
    digest_of,
    ensure,
    files_info,
    read_checked,
    resolve_data_dir,
    verified_of,
)

NAME = "omniglot"
FILES = {
    "chardata": Remote(NAME, "chardata.mat",
                       "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat",
                       check="MATLAB file with 784-row `data` and `testdata` of values in [0, 1]",
                       git_blob="016a3536ffe5e1d38e42563a18d7a78bfaf643ec"),  # yburda/iwae's blob of the file
}
SPLIT_SEED = 777  # shuffle of the training set before the validation images are split off
BINARIZE_SEED = 777  # the one-off binarisation of the validation and test images
N_VALIDATION = 1345


def _images(mat: dict, key: str) -> np.ndarray:
    if key not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__"))
        raise ValueError(f"no variable {key!r} (found {found or 'none'})")
    a = np.asarray(mat[key])
    if a.ndim != 2 or a.shape[0] != 784 or a.shape[1] == 0 or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"wrong shape: {key!r} is {a.dtype} {a.shape}, expected 784 x N (one 28x28 image a "
                         f"column)")
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"{key!r} holds values outside [0, 1] (min {a.min()}, max {a.max()})")
    # each column is a column-major 28x28 image: image[r, c] = column[r + 28 c]
    return a.T.reshape(-1, 28, 28).transpose(0, 2, 1)


def read_chardata(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) gray images [N, 28, 28] from chardata.mat."""
    from scipy.io import loadmat

    mat = loadmat(path, variable_names=["data", "testdata"])
    return _images(mat, "data"), _images(mat, "testdata")


def binarize_as_reference(val: np.ndarray, test: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's one-off binarisation: `RandomState(seed)` draws binomial(1, p) for every pixel of the
    validation images, then of the test images, in row-major order of each image [N, 28, 28]."""
    rs = np.random.RandomState(seed)
    drawn = [rs.binomial(1, a.reshape(len(a), -1).astype(np.float64)).reshape(a.shape) for a in (val, test)]
    return drawn[0].astype(np.float32), drawn[1].astype(np.float32)


def _check_split(n: int, path: Path, n_validation: int) -> None:
    if not 0 < n_validation < n:
        raise DatasetError(f"dataset {NAME}: option n_validation={n_validation} must be between 1 and {n - 1}: "
                           f"the training set of {path} holds {n} images")


def load(data_dir: Path | None = None, download: bool = True, *, n_validation: int = N_VALIDATION,
         split_seed: int = SPLIT_SEED, binarize_seed: int = BINARIZE_SEED, **options) -> Splits:
    import torch
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r = FILES["chardata"]
    digests = ensure([r], data_dir, download, {r.filename: read_chardata})
    train_all, test = read_checked(r, data_dir, read_chardata)
    _check_split(len(train_all), r.path(data_dir), n_validation)
    train_all = train_all[np.random.default_rng(split_seed).permutation(len(train_all))]
    train, val = train_all[:-n_validation], train_all[-n_validation:]
    val, test = binarize_as_reference(val, test, binarize_seed)
    x = [torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1) for a in (train, val, test)]
    meta = DatasetMeta(name=NAME, input_type="binary", shape=(1, 28, 28), dynamic_binarization=True,
                       pseudo_init_mean=0.05, pseudo_init_std=0.01,
                       source=f"Omniglot chardata.mat from {data_dir / NAME}")
    info = {**files_info([r], data_dir, digests),
            "split_seed": split_seed, "binarize_seed": binarize_seed}
    return Splits(*x, meta, info)


def verify(data_dir: Path | None = None, *, n_validation: int = N_VALIDATION, split_seed: int = SPLIT_SEED,
           binarize_seed: int = BINARIZE_SEED, digests: DigestCache | None = None, **options) -> Verified:
    """The file present and of the right format (it is read: no SHA-256 is recorded), and the split sizes;
    with a DigestCache, an unchanged file that passed is not read again."""
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r = FILES["chardata"]
    ensure([r], data_dir, False, cache=digests)
    n_train, n_test = digest_of(r.path(data_dir), "omniglot-format",
                                lambda p: [len(a) for a in read_checked(r, data_dir, read_chardata)], digests)
    _check_split(n_train, r.path(data_dir), n_validation)
    return Verified({"train": n_train - n_validation, "val": n_validation, "test": n_test},
                    verified_of([r], data_dir))


@dataclass
class Options:
    """dataset.options of `dataset=omniglot`."""

    n_validation: int = default_of(load, "n_validation")
    split_seed: int = default_of(load, "split_seed")
    binarize_seed: int = default_of(load, "binarize_seed")

    def __post_init__(self):
        at_least(self, 1, "n_validation")
        at_least(self, 0, "split_seed", "binarize_seed")
