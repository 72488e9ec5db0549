"""Caltech 101 Silhouettes (Marlin et al., 2010), 28x28, the published split 1: 4100/2264/2307.

`caltech101_silhouettes_28_split1.mat` holds `train_data`, `val_data` and `test_data` (N x 784, 0/1), every
row one 28x28 image stored column-major, with 1 = background. Pixels are inverted (`1 - x`) as in the
reference so that the silhouette is 1 and the background 0. Verified by the file's recorded SHA-256 and
size (a byte-identical copy of the file at the canonical address; see shared/data/SOURCES.md).
The file's order is kept: training shuffles every epoch, so no shuffle is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetMeta, Splits, Verified, default_of
from .download import (
    DigestCache,
    Remote,
    check_options,
    ensure,
    files_info,
    read_checked,
    resolve_data_dir,
    verified_of,
)

NAME = "caltech101"
FILES = {
    "mat": Remote(NAME, "caltech101_silhouettes_28_split1.mat",
                  "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",
                  size=872124,
                  sha256="eb6735e8d84b1850fabc5590124aab1755e90c9fd28123585324398405e1e42a"),
}
KEYS = {"train": "train_data", "val": "val_data", "test": "test_data"}


def read_silhouettes(path: Path, invert: bool = True) -> dict[str, np.ndarray]:
    """{split: [N, 28, 28] float32 images} from the .mat file; inverted (the default): 1 = object."""
    from scipy.io import loadmat

    mat = loadmat(path, variable_names=list(KEYS.values()))
    out = {}
    for split, key in KEYS.items():
        if key not in mat:
            found = ", ".join(k for k in mat if not k.startswith("__"))
            raise ValueError(f"no variable {key!r} (found {found or 'none'})")
        a = np.asarray(mat[key])
        if a.ndim != 2 or a.shape[1] != 784 or a.shape[0] == 0:
            raise ValueError(f"wrong shape: {key!r} is {a.shape}, expected N x 784 (one 28x28 image a row)")
        if not np.isin(a, (0, 1)).all():
            raise ValueError(f"{key!r} holds values other than 0 and 1")
        # each row is a column-major 28x28 image: image[r, c] = row[r + 28 c]; then invert
        img = a.astype(np.float32).reshape(-1, 28, 28).transpose(0, 2, 1)
        out[split] = 1.0 - img if invert else img
    return out


def load(data_dir: Path | None = None, download: bool = True, *, invert: bool = True, **options) -> Splits:
    """invert: 1 - x as in the reference (silhouette 1, background 0); false: the file's 1 = background."""
    import torch
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r = FILES["mat"]
    digests = ensure([r], data_dir, download, {r.filename: read_silhouettes})
    x = {k: torch.from_numpy(np.ascontiguousarray(v)).unsqueeze(1)
         for k, v in read_checked(r, data_dir, lambda p: read_silhouettes(p, bool(invert))).items()}
    meta = DatasetMeta(name=NAME, input_type="binary", shape=(1, 28, 28), dynamic_binarization=False,
                       pseudo_init_mean=0.5, pseudo_init_std=0.02,
                       source=f"Caltech 101 Silhouettes (28, split 1) from {data_dir / NAME}")
    info = files_info([r], data_dir, digests)
    return Splits(x["train"], x["val"], x["test"], meta, info)


def _split_sizes(path: Path) -> dict[str, int]:
    """The splits' row counts from the .mat file's variable headers (scipy's whosmat reads no data)."""
    from scipy.io import whosmat

    shapes = {name: shape for name, shape, _ in whosmat(path)}
    out = {}
    for split, key in KEYS.items():
        if key not in shapes or len(shapes[key]) != 2 or shapes[key][1] != 784:
            raise ValueError(f"no N x 784 variable {key!r} (found {', '.join(f'{k} {v}' for k, v in shapes.items())})")
        out[split] = int(shapes[key][0])
    return out


def verify(data_dir: Path | None = None, *, invert: bool = True, digests: DigestCache | None = None,
           **options) -> Verified:
    """The file present with its recorded size and SHA-256; the split sizes from its headers."""
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    r = FILES["mat"]
    ensure([r], data_dir, False, cache=digests)
    sizes = read_checked(r, data_dir, _split_sizes)
    return Verified(sizes, verified_of([r], data_dir))


@dataclass
class Options:
    """dataset.options of `dataset=caltech101`."""

    invert: bool = default_of(load, "invert")
