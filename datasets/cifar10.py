"""CIFAR-10 through torchvision's `CIFAR10` (its own download and MD5 integrity check), as in the reference.

The files live in `<data_dir>/cifar10/` (torchvision's layout: `cifar-10-python.tar.gz` and the extracted
`cifar-10-batches-py/`, every batch checked against torchvision's recorded MD5). Pixels k become
(k + 0.5) / 256; the 50000 training images are shuffled with a fixed seed into 40000 train and 10000
validation images; the 10000 test images are the test set. Images are [3, 32, 32] (channels first).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from .base import DatasetError, DatasetMeta, Splits
from .download import DatasetCorrupt, DatasetMissing, check_options, resolve_data_dir

NAME = "cifar10"
SPLIT_SEED = 14  # shuffle of the training set before the validation images are split off
N_VAL = 10000


def _expected(cls) -> list[tuple[str, str]]:
    return [*(tuple(x) for x in cls.train_list), *(tuple(x) for x in cls.test_list),
            (cls.meta["filename"], cls.meta["md5"])]


def _problems(cls, root: Path) -> tuple[list[str], list[str]]:
    """(missing, corrupt) files of the extracted batches folder, by torchvision's MD5 list."""
    from torchvision.datasets.utils import check_integrity

    folder = root / cls.base_folder
    missing = [n for n, _ in _expected(cls) if not (folder / n).is_file()]
    corrupt = [n for n, md5 in _expected(cls)
               if n not in missing and not check_integrity(str(folder / n), md5)]
    return missing, corrupt


def _fetch(cls, root: Path) -> None:
    """torchvision's download, made tidy: a failure leaves no partial archive or half-extracted folder."""
    from torchvision.datasets.utils import check_integrity

    archive, folder = root / cls.filename, root / cls.base_folder
    had_archive, had_folder = archive.exists(), folder.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
    except Exception as e:
        if not had_archive and archive.exists() and not check_integrity(str(archive), cls.tgz_md5):
            archive.unlink()
        if not had_folder and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise DatasetError(f"dataset {NAME}: could not download {cls.filename} from {cls.url} to {archive} "
                           f"({type(e).__name__}: {text}); no partial file was left. When offline, fetch it "
                           f"elsewhere, put it at {archive} (torchvision checks its MD5 {cls.tgz_md5}) and "
                           f"run again") from e


def load(data_dir: Path | None = None, download: bool = True, *, n_val: int = N_VAL,
         split_seed: int = SPLIT_SEED, **options) -> Splits:
    from torchvision.datasets import CIFAR10

    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    root = data_dir / NAME
    folder = root / CIFAR10.base_folder
    missing, corrupt = _problems(CIFAR10, root)
    if corrupt:
        raise DatasetCorrupt(
            f"dataset {NAME}: {', '.join(corrupt)} in {folder} fail(s) torchvision's MD5 check (corrupt "
            f"or not the CIFAR-10 python batches). Delete {folder} (and {root / CIFAR10.filename}), then "
            f"fetch {CIFAR10.url} with `glossy data fetch dataset={NAME} data_dir={data_dir}` or put it at "
            f"{root / CIFAR10.filename}", folder)
    if missing:
        if not download:
            raise DatasetMissing(
                f"dataset {NAME}: missing file(s) and download=false: {', '.join(missing)} in {folder}. "
                f"Download with `glossy data fetch dataset={NAME} data_dir={data_dir}` (or run with "
                f"download=true), or fetch {CIFAR10.url} by hand, put it at {root / CIFAR10.filename} and "
                f"run with download=true (it is then only extracted)", [folder])
        _fetch(CIFAR10, root)
    try:
        train_set, test_set = CIFAR10(str(root), train=True), CIFAR10(str(root), train=False)
    except Exception as e:  # unpickling or reshaping failed: not the python batches
        raise DatasetCorrupt(f"dataset {NAME}: the batches in {folder} could not be read "
                             f"({type(e).__name__}: {str(e)[:300]}). Delete {folder}, then fetch "
                             f"{CIFAR10.url} again", folder) from e
    train_all, test = (np.asarray(d.data) for d in (train_set, test_set))  # [N, 32, 32, 3] uint8
    if not 0 < n_val < len(train_all):
        raise DatasetError(f"dataset {NAME}: option n_val={n_val} must be between 1 and {len(train_all) - 1}")
    train_all = train_all[np.random.default_rng(split_seed).permutation(len(train_all))]

    def tensor(a: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(torch.float32) + 0.5) / 256.0

    train, val = tensor(train_all[:-n_val]), tensor(train_all[-n_val:])
    meta = DatasetMeta(name=NAME, input_type="continuous", shape=(3, 32, 32), dynamic_binarization=False,
                       pseudo_init_mean=0.4, pseudo_init_std=0.05,
                       source=f"CIFAR-10 (torchvision) from {root}")
    info = {"files": {CIFAR10.base_folder: {"path": str(folder), "verified_by": "md5 (torchvision)"}},
            "split_seed": split_seed}
    return Splits(train.contiguous(), val.contiguous(), tensor(test).contiguous(), meta, info)
