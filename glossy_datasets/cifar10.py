"""CIFAR-10 from the python batches (torchvision's layout), read and verified here.

The files live in `<data_dir>/cifar10/cifar-10-batches-py/` (`data_batch_1`..`5`, `test_batch`,
`batches.meta`; a download fetches `cifar-10-python.tar.gz` beside them, with pooch, and extracts it). A batch is
accepted when it is the original file (its MD5, the one torchvision records) or when its *content* is the
original's: the sha256 of its `data` array (uint8, [10000, 3072], C order) and of its labels as uint8
bytes, as recorded in CONTENT_SHA256 (a copy rebuilt from another lossless source has other bytes, e.g.
no `filenames` list, but the same images and labels). The pickles are read by a restricted unpickler
(only numpy arrays and built-in containers), so a file of unknown origin cannot run code. Pixels k
become (k + 0.5) / 256; the 50000 training images are shuffled with a fixed seed into 40000 train and
10000 validation images; the 10000 test images are the test set. Images are [3, 32, 32] (channels first).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import DatasetError, DatasetMeta, Splits, Verified, at_least, default_of
from .download import (
    DatasetCorrupt,
    DatasetMissing,
    DigestCache,
    Remote,
    check_options,
    corrupt_error,
    digest_of,
    download,
    md5_file,
    read_checked,
    resolve_data_dir,
)

if TYPE_CHECKING:
    import torch

NAME = "cifar10"
SPLIT_SEED = 14  # shuffle of the training set before the validation images are split off
N_VAL = 10000
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = ("test_batch",)
META = "batches.meta"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# the original files' MD5 (as torchvision records them)
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# sha256 of each batch's content: (the data array's bytes, the labels as uint8 bytes)
CONTENT_SHA256 = {
    "data_batch_1": ("a50e8b48728e1667d682a807155c375279d5ae321fb12242c02e3104a6bc8b21",
                     "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9"),
    "data_batch_2": ("0b825e5592c3b72ea18d6ec2ff5f5b19d33e41a75f5039054a9bb87be3cf69a0",
                     "5d18f7371ed35ea9ade77952fe958b0660a45cd6c8b8a8970030f21612cfd7e3"),
    "data_batch_3": ("c6ee1dd4601a69ec085d8ebf53ee6441775491a6839a0a9ae8fa198e88a3a429",
                     "32cf77b0ee2e790b1c4384d2d82e42dc1571b87e67f6da8f444b2725b2973f65"),
    "data_batch_4": ("1f6b6c799cff375a9f8fae2fac909d51ee09f38a6a60eebb9e8fec6f47ddc48f",
                     "d2815e3f8f656272864920fc0edde56b04ec9cf81bf397c0dd3069f4aea51aeb"),
    "data_batch_5": ("58e3bbf713e28357476a351d3a05d056372f94c681d04ca9d62a076fdf2a643b",
                     "2ddf3ab27d5d04409c94ce7b56849c243129c10de1058ae0bfe14c77e934800c"),
    "test_batch": ("177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
                   "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Only what the CIFAR-10 batches hold: numpy arrays, dtypes and built-in containers."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_pickle(raw: bytes) -> dict:
    got = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not isinstance(got, dict):
        raise pickle.UnpicklingError(f"a {type(got).__name__}, not a dict")
    return got


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _fix(folder: Path, data_dir: Path) -> str:
    return (f"delete {folder} (nothing of glossy's is kept there), then fetch {URL} with "
            f"`glossy data fetch dataset={NAME} data_dir={data_dir}` or put the archive at "
            f"{folder.parent / ARCHIVE}")


def _parse_batch(raw: bytes, path: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, 3072] uint8, labels [n] uint8) of a batch's bytes; DatasetCorrupt when it is not one."""
    try:
        d = _read_pickle(raw)
        data = np.ascontiguousarray(d["data"])
        labels = np.asarray(d["labels"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
            raise ValueError(f"data {data.dtype} {data.shape}, labels {labels.shape}")
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
            raise ValueError("labels outside 0..9")
    except Exception as e:  # not a readable batch at all
        raise DatasetCorrupt(f"dataset {NAME}: {path} is not a CIFAR-10 python batch ({type(e).__name__}: "
                             f"{str(e)[:200]}); expected MD5 {MD5[path.name]} (the original file) or a pickle "
                             f"whose data/labels sha256 are {CONTENT_SHA256[path.name][0][:16]}.../"
                             f"{CONTENT_SHA256[path.name][1][:16]}...; {_fix(path.parent, data_dir)}", path) from e
    return data, labels.astype(np.uint8)


def _content(data: np.ndarray, labels: np.ndarray) -> tuple[str, str]:
    return _sha256(data.tobytes()), _sha256(labels.tobytes())


def _check_content(path: Path, data_dir: Path, got: tuple[str, str]) -> None:
    want = CONTENT_SHA256[path.name]
    if got != want:
        what = "data" if got[0] != want[0] else "labels"
        raise DatasetCorrupt(f"dataset {NAME}: {path} is neither the original file (MD5 {MD5[path.name]}) nor "
                             f"a copy of its content: its {what} sha256 is {got[what == 'labels']}, expected "
                             f"{want[what == 'labels']}; {_fix(path.parent, data_dir)}", path)


def _verified_by(path: Path, data_dir: Path, md5: str, content: Callable[[], tuple[str, str]]) -> str:
    """md5 when the batch is the original file, else `content sha256` once its arrays' sha256 match the original's
    (`content` is computed only then); DatasetCorrupt naming the file when neither holds."""
    if md5 == MD5[path.name]:
        return "md5"
    _check_content(path, data_dir, content())
    return "content sha256"


def read_batch(path: Path, data_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(images [n, 3072] uint8, labels [n] uint8, how the file was verified) of one batch; DatasetCorrupt
    naming the file, what was expected and what to do when it is neither the original nor its content."""
    raw = path.read_bytes()
    data, labels = _parse_batch(raw, path, data_dir)
    return data, labels, _verified_by(path, data_dir, hashlib.md5(raw).hexdigest(), lambda: _content(data, labels))


def check_batch(path: Path, data_dir: Path, cache: DigestCache | None = None) -> tuple[str, int]:
    """(how one batch is verified: md5 or content sha256, its number of images), with the same refusals as
    `read_batch`, keeping no arrays. With a DigestCache, an unchanged file is not read again."""

    def record(p: Path) -> dict:
        raw = p.read_bytes()
        data, labels = _parse_batch(raw, p, data_dir)
        return {"md5": hashlib.md5(raw).hexdigest(), "content": list(_content(data, labels)), "n": len(data)}

    rec = digest_of(path, "cifar10-batch", record, cache)
    return _verified_by(path, data_dir, rec["md5"], lambda: tuple(rec["content"])), int(rec["n"])


def _check_meta(path: Path, data_dir: Path) -> str:
    raw = path.read_bytes()
    if hashlib.md5(raw).hexdigest() == MD5[META]:
        return "md5"
    try:
        names = tuple(_read_pickle(raw)["label_names"])
    except Exception:
        names = ()
    if names != LABEL_NAMES:
        raise DatasetCorrupt(f"dataset {NAME}: {path} is not CIFAR-10's batches.meta (MD5 {MD5[META]}, or "
                             f"label_names {', '.join(LABEL_NAMES)}); {_fix(path.parent, data_dir)}", path)
    return "content"


ARCHIVE_REMOTE = Remote(NAME, ARCHIVE, URL, check=f"gzip tar of the python batches, MD5 {ARCHIVE_MD5}")


def _archive_md5(path: Path) -> None:
    got = md5_file(path)
    if got != ARCHIVE_MD5:
        raise ValueError(f"MD5 mismatch: got {got}, expected {ARCHIVE_MD5}")


def _fetch(data_dir: Path) -> None:
    """The missing batches from the archive: downloaded (pooch, atomically, its MD5 checked) unless it is already
    there, extracted with pooch's Untar into a temporary folder, and only the missing files moved into place (a
    file already in the folder is never replaced). A failure leaves no partial archive or folder behind."""
    import pooch

    root, archive = data_dir / NAME, ARCHIVE_REMOTE.path(data_dir)
    if archive.is_file():
        read_checked(ARCHIVE_REMOTE, data_dir, _archive_md5)
    else:
        download(ARCHIVE_REMOTE, data_dir, _archive_md5)
    folder = root / FOLDER
    had_folder = folder.exists()
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=root))
    try:
        read_checked(ARCHIVE_REMOTE, data_dir, lambda p: pooch.Untar(extract_dir=str(tmp))(str(p), "download", None))
        folder.mkdir(exist_ok=True)
        for n in _missing(folder):
            if not (tmp / FOLDER / n).is_file():
                raise corrupt_error(ARCHIVE_REMOTE, data_dir, f"the archive holds no {FOLDER}/{n}")
            os.replace(tmp / FOLDER / n, folder / n)
    except BaseException:
        if not had_folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing(folder: Path) -> list[str]:
    return [n for n in (*TRAIN, *TEST, META) if not (folder / n).is_file()]


def _missing_error(folder: Path, data_dir: Path) -> DatasetMissing:
    return DatasetMissing(
        f"dataset {NAME}: missing file(s) and download=false: {', '.join(_missing(folder))} in {folder}. "
        f"Download with `glossy data fetch dataset={NAME} data_dir={data_dir}` (or run with "
        f"download=true), or fetch {URL} by hand, put it at {folder.parent / ARCHIVE} and "
        f"run with download=true (it is then only extracted)", [folder])


def load(data_dir: Path | None = None, download: bool = True, *, n_val: int = N_VAL,
         split_seed: int = SPLIT_SEED, **options) -> Splits:
    import torch
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    root = data_dir / NAME
    folder = root / FOLDER
    if _missing(folder):
        if not download:
            raise _missing_error(folder, data_dir)
        _fetch(data_dir)
    verified = {META: _check_meta(folder / META, data_dir)}
    parts = {}
    for n in (*TRAIN, *TEST):
        data, labels, verified[n] = read_batch(folder / n, data_dir)
        parts[n] = (data, labels)
    train_all = np.concatenate([parts[n][0] for n in TRAIN])  # [50000, 3072]: R, G, B planes, row-major
    labels_all = np.concatenate([parts[n][1] for n in TRAIN])
    test, test_labels = parts["test_batch"]
    if not 0 < n_val < len(train_all):
        raise DatasetError(f"dataset {NAME}: option n_val={n_val} must be between 1 and {len(train_all) - 1}")
    order = np.random.default_rng(split_seed).permutation(len(train_all))
    train_all, labels_all = train_all[order], labels_all[order]

    def tensor(a: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(a).reshape(-1, 3, 32, 32).to(torch.float32) + 0.5) / 256.0).contiguous()

    meta = DatasetMeta(name=NAME, input_type="continuous", shape=(3, 32, 32), dynamic_binarization=False,
                       pseudo_init_mean=0.4, pseudo_init_std=0.05, source=f"CIFAR-10 python batches from {folder}")
    how = sorted(set(verified.values()))
    info = {"files": {n: {"path": str(folder / n), "verified_by": v} for n, v in verified.items()},
            "verified_by": ", ".join(how), "split_seed": split_seed,
            "labels": {"train": torch.from_numpy(labels_all[:-n_val].astype(np.int64)),
                       "val": torch.from_numpy(labels_all[-n_val:].astype(np.int64)),
                       "test": torch.from_numpy(test_labels.astype(np.int64))}}
    return Splits(tensor(train_all[:-n_val]), tensor(train_all[-n_val:]), tensor(test), meta, info)


def verify(data_dir: Path | None = None, *, n_val: int = N_VAL, split_seed: int = SPLIT_SEED,
           digests: DigestCache | None = None, **options) -> Verified:
    """Every batch and batches.meta present and verified as `load` verifies them; the split sizes."""
    check_options(NAME, options, ())
    data_dir = resolve_data_dir(data_dir)
    folder = data_dir / NAME / FOLDER
    if _missing(folder):
        raise _missing_error(folder, data_dir)
    verified, count = {META: _check_meta(folder / META, data_dir)}, {}
    for n in (*TRAIN, *TEST):
        verified[n], count[n] = check_batch(folder / n, data_dir, digests)
    n_train = sum(count[n] for n in TRAIN)
    if not 0 < n_val < n_train:
        raise DatasetError(f"dataset {NAME}: option n_val={n_val} must be between 1 and {n_train - 1}")
    return Verified({"train": n_train - n_val, "val": n_val, "test": sum(count[n] for n in TEST)},
                    {n: {"path": str(folder / n), "verified_by": v} for n, v in verified.items()})


@dataclass
class Options:
    """dataset.options of `dataset=cifar10`."""

    n_val: int = default_of(load, "n_val")
    split_seed: int = default_of(load, "split_seed")

    def __post_init__(self):
        at_least(self, 1, "n_val")
        at_least(self, 0, "split_seed")
