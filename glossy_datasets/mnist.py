"""Static binarized MNIST (Larochelle & Murray, 2011): the fixed binarisation, 50000/10000/10000.

Files: `binarized_mnist_{train,valid,test}.amat`, one image a line, 784 whitespace-separated 0/1 values,
row-major 28x28. Verified by their recorded SHA-256 and size (these match the files at the canonical
address, as also recorded by TensorFlow Datasets' `binarized_mnist` checksums). The text is parsed
once; afterwards a bit-packed cache beside each file, keyed on its SHA-256, is read instead.
Training order is the file's: training shuffles every epoch, so no shuffle is needed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetMeta, Splits, Verified, default_of
from .download import (
    DigestCache,
    Remote,
    cached_array,
    check_options,
    ensure,
    files_info,
    read_checked,
    resolve_data_dir,
    verified_of,
)

NAME = "mnist"
_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{}.amat"
FILES = {
    "train": Remote(NAME, "binarized_mnist_train.amat", _URL.format("train"), size=78400000,
                    sha256="ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
    "val": Remote(NAME, "binarized_mnist_valid.amat", _URL.format("valid"), size=15680000,
                  sha256="1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
    "test": Remote(NAME, "binarized_mnist_test.amat", _URL.format("test"), size=15680000,
                   sha256="e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
}
D = 784


def _parse_canonical(raw: bytes, d: int) -> np.ndarray | None:
    """The canonical layout (one char a value, single spaces, newline line ends) in one go; else None."""
    if len(raw) % (2 * d):
        return None
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 2 * d)
    values, seps = a[:, 0::2], a[:, 1::2]
    if not ((seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all()):
        return None
    if not ((values == ord("0")) | (values == ord("1"))).all():
        return None
    return values - np.uint8(ord("0"))


def parse_amat(path: Path, d: int = D) -> np.ndarray:
    """[N, d] uint8 from an .amat text of whitespace-separated 0/1 values, one example a line."""
    raw = Path(path).read_bytes()
    fast = _parse_canonical(raw, d)
    if fast is not None:
        return fast
    rows = []
    for i, line in enumerate(raw.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue  # blank line, e.g. a trailing one
        if len(tokens) != d:
            raise ValueError(f"wrong shape: line {i} holds {len(tokens)} values, expected {d} (28x28) "
                             f"per line")
        joined = b"".join(tokens)
        row = np.frombuffer(joined, dtype=np.uint8) - np.uint8(ord("0"))
        if len(joined) != d or (row > 1).any():
            bad = next(t for t in tokens if t not in (b"0", b"1"))
            raise ValueError(f"line {i} holds the value {bad.decode('latin1')!r}; expected only 0 and 1")
        rows.append(row)
    if not rows:
        raise ValueError("the file holds no values")
    return np.stack(rows)


def load(data_dir: Path | None = None, download: bool = True, *, cache: bool = True, **options) -> Splits:
    """cache: read/write the bit-packed parse cache (beside the file, else under the user cache dir)."""
    import torch
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    remotes = list(FILES.values())
    digests = ensure(remotes, data_dir, download, {r.filename: parse_amat for r in remotes})
    arrays = {}
    for split, r in FILES.items():
        if cache:
            arrays[split] = read_checked(r, data_dir, lambda p, r=r: cached_array(p, digests[r.filename],
                                                                                  lambda: parse_amat(p)))
        else:
            arrays[split] = read_checked(r, data_dir, parse_amat)
    x = {k: torch.from_numpy(v).to(torch.float32).view(-1, 1, 28, 28) for k, v in arrays.items()}
    meta = DatasetMeta(name=NAME, input_type="binary", shape=(1, 28, 28), dynamic_binarization=False,
                       pseudo_init_mean=0.05, pseudo_init_std=0.01,
                       source=f"static binarized MNIST from {data_dir / NAME}")
    info = files_info(remotes, data_dir, digests)
    return Splits(x["train"], x["val"], x["test"], meta, info)


def verify(data_dir: Path | None = None, *, cache: bool = True, digests: DigestCache | None = None,
           **options) -> Verified:
    """The three files present with their recorded size and SHA-256, without parsing them (a verified file is
    the canonical layout: one image is 2 x 784 bytes); a file without a recorded size is parsed."""
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    remotes = list(FILES.values())
    ensure(remotes, data_dir, False, cache=digests)
    sizes = {split: r.size // (2 * D) if r.size is not None and r.sha256 is not None
             else len(read_checked(r, data_dir, parse_amat)) for split, r in FILES.items()}
    return Verified(sizes, verified_of(remotes, data_dir))


@dataclass
class Options:
    """dataset.options of `dataset=mnist`."""

    cache: bool = default_of(load, "cache")
