"""Where dataset files live, how missing ones are fetched, and how every file is verified.

Layout: `<data_dir>/<dataset>/<canonical file name>`. A missing file is downloaded from its canonical
public address (pooch, with retries and a progress bar) into a temporary file beside its destination, verified,
and only then moved into place with `os.replace`, so an interrupted or failed download never leaves a
partial or corrupt file behind. Verification is by a recorded SHA-256 (and size) where a stable hash of
the canonical file is known; otherwise the file's format and content are checked by its loader (each
`Remote` says which). Every failure becomes one `DatasetError` whose message names the file, where it
is expected, the address to fetch it from and what was wrong.

Parsed arrays of slow text formats are cached beside their source (or, when the data directory is not
writable, under the user's cache directory), keyed on the SHA-256 of the verified source file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetError

log = logging.getLogger("glossy")

USER_AGENT = "glossy-datasets/1 (+https://github.com/; research data loader)"
TIMEOUT_S = 60.0
RETRIES = 2  # a failed download is tried again this many times (pooch waits between tries)
CACHE_FORMAT = 1  # bump when the layout of the parsed-array caches changes
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what open() would have given; mkstemp's temporary files are 0600


class DatasetMissing(DatasetError):
    """Files of a dataset are absent and were not (or could not be) downloaded."""

    def __init__(self, message: str, paths: Iterable[Path] = ()) -> None:
        super().__init__(message)
        self.paths = list(paths)


class DatasetCorrupt(DatasetError):
    """A dataset file is present but is not what it should be (checksum, size, format or shape)."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Remote:
    """One canonical file of a dataset: its name, public address and what verifies it."""

    dataset: str
    filename: str
    url: str
    sha256: str | None = None  # recorded SHA-256 of the canonical file; None: no stable hash is known
    size: int | None = None  # bytes, where known
    check: str = ""  # how the file is verified when no SHA-256 is recorded
    # the file's git blob id in the public repository it is served from: sha1(b"blob <size>\0" + bytes), a content
    # hash that the repository itself records (git ls-tree), for a file no copy of which was here to hash
    git_blob: str | None = None

    def path(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.dataset / self.filename

    @property
    def verified_by(self) -> str:
        return "sha256" if self.sha256 else "git blob id" if self.git_blob else "format"


def files_info(remotes, data_dir: Path, digests: dict[str, str]) -> dict:
    """{"files": {name: {path, sha256, verified_by}}}: what a loaded Splits records of its sources."""
    return {"files": {r.filename: {"path": str(r.path(data_dir)), "sha256": digests[r.filename],
                                   "verified_by": r.verified_by} for r in remotes}}


def verified_of(remotes, data_dir: Path) -> dict[str, dict[str, str]]:
    """{filename: {path, verified_by}}: what `verify` reports of a dataset's files (files_info without digests)."""
    return {r.filename: {"path": str(r.path(data_dir)), "verified_by": r.verified_by} for r in remotes}


def default_data_dir() -> Path:
    """$GLOSSY_DATA_DIR if set, else <user cache dir>/glossy/data ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get("GLOSSY_DATA_DIR"):
        return Path(os.environ["GLOSSY_DATA_DIR"]).expanduser()
    return user_cache_dir() / "data"


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "glossy"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def file_digest(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def md5_file(path: Path) -> str:
    return file_digest(path, "md5")


def git_blob_id(path: Path, chunk: int = 1 << 20) -> str:
    """The id git gives the file's bytes as a blob: sha1 of b"blob <size>\\0" followed by the bytes."""
    h = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class DigestCache:
    """Digests of files computed before, reused while a file keeps its size, mtime, inode and device.

    `glossy data` lists every dataset through one (as git and DVC trust a file's stat to tell it unchanged):
    a file is hashed the first time it is listed and again whenever it changes. Loading a dataset for a run
    never uses it: a run hashes its files afresh. The record is `<user cache dir>/glossy/digests.json`; an
    unreadable or unwritable record is never an error (the files are simply hashed).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else user_cache_dir() / "digests.json"
        try:
            loaded = json.loads(self.path.read_text())
            self.entries: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False
        self.reused = 0  # digests taken from the record (files not read again)

    def get(self, path: Path, kind: str, compute: Callable[[Path], Any]) -> Any:
        """`compute(path)` (a JSON value: a digest, or a list of them), or what it gave while `path` was unchanged."""
        st = os.stat(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]
        key = f"{kind}:{os.path.realpath(path)}"
        e = self.entries.get(key)
        if isinstance(e, dict) and e.get("stat") == stamp and "value" in e:
            self.reused += 1
            return e["value"]
        value = compute(Path(path))
        self.entries[key] = {"stat": stamp, "value": value}
        self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        text = json.dumps(self.entries, sort_keys=True).encode()
        try:
            _atomic_write(self.path, lambda f: f.write(text))
            self.dirty = False
        except OSError:
            log.debug("could not write the digest record %s", self.path)


def digest_of(path: Path, kind: str, compute: Callable[[Path], Any], cache: DigestCache | None) -> Any:
    return compute(Path(path)) if cache is None else cache.get(path, kind, compute)


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --------------------------------------------------------------------------------------------- messages


def fix_hint(remote: Remote, data_dir: Path) -> str:
    return (f"fetch it from {remote.url} and put it at {remote.path(data_dir)}, or run "
            f"`glossy data fetch dataset={remote.dataset} data_dir={data_dir}`")


def missing_error(remotes: list[Remote], data_dir: Path, why: str = "download=false") -> DatasetMissing:
    name = remotes[0].dataset
    parts = [f"{r.filename} (expected at {r.path(data_dir)}; fetch it from {r.url})" for r in remotes]
    noun = "file" if len(remotes) == 1 else f"{len(remotes)} files"
    return DatasetMissing(
        f"dataset {name}: missing {noun} and {why}: {'; '.join(parts)}. Download with "
        f"`glossy data fetch dataset={name} data_dir={data_dir}` (or run with download=true), "
        f"or put the file(s) there by hand", [r.path(data_dir) for r in remotes])


def corrupt_error(remote: Remote, data_dir: Path, problem: str, path: Path | None = None) -> DatasetCorrupt:
    path = path or remote.path(data_dir)
    return DatasetCorrupt(
        f"dataset {remote.dataset}: {path} is corrupt or not the expected file: {problem}. Delete it, then "
        f"{fix_hint(remote, data_dir)}", path)


# --------------------------------------------------------------------------------------------- checks


def checksum_problem(path: Path, remote: Remote, cache: DigestCache | None = None) -> tuple[str | None, str]:
    """(what is wrong with the file's size or SHA-256, or None; its SHA-256)."""
    size = path.stat().st_size
    digest = digest_of(path, "sha256", sha256_file, cache)
    if remote.size is not None and size != remote.size:
        kind = "truncated" if size < remote.size else "too long"
        return f"{kind}: {size} bytes, expected {remote.size}", digest
    if remote.sha256 is not None and digest != remote.sha256.lower():
        return f"SHA-256 mismatch: got {digest}, expected {remote.sha256}", digest
    if remote.sha256 is None and remote.git_blob is not None:
        blob = digest_of(path, "git-blob", git_blob_id, cache)
        if blob != remote.git_blob.lower():
            return f"git blob id mismatch: got {blob}, expected {remote.git_blob} (its SHA-256: {digest})", digest
        log.info("%s verified by its git blob id %s; its SHA-256 is %s", path, blob, digest)
    return None, digest


def read_checked(remote: Remote, data_dir: Path, reader: Callable[[Path], Any],
                 path: Path | None = None) -> Any:
    """Run a file's reader; any failure to parse it becomes a DatasetCorrupt naming the file."""
    path = path or remote.path(data_dir)
    try:
        return reader(path)
    except DatasetError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # a parser's failure on a present file means the file is not what it should be
        raise corrupt_error(remote, data_dir, _describe(e), path) from e


# --------------------------------------------------------------------------------------------- download


def fetch_url(url: str, dest: Path, desc: str = "") -> None:
    """Fetch `url` into the (temporary) file `dest` with pooch: HTTP(S), FTP, SFTP or DOI, up to RETRIES more
    tries after a failure, a progress bar on a terminal. Raises on any failure; nothing is left but `dest`.

    Tests replace this function to simulate the network; it must write the bytes it received to `dest`.
    """
    import pooch
    from tqdm import tqdm

    dest = Path(dest)
    name = desc or dest.name
    pooch.get_logger().setLevel(logging.WARNING)  # glossy logs the download itself
    folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tqdm(total=1, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=None,  # pooch sets total
                  leave=False) as bar:
            if url.split(":", 1)[0].lower() in ("http", "https"):
                downloader = pooch.HTTPDownloader(progressbar=bar, headers={"User-Agent": USER_AGENT},
                                                  timeout=TIMEOUT_S)
            else:
                downloader = pooch.downloaders.choose_downloader(url, progressbar=False)
            fetcher = pooch.create(path=folder, base_url="", registry={name: None}, urls={name: url},
                                   retry_if_failed=RETRIES)
            got = fetcher.fetch(name, downloader=downloader)  # the hash is checked by `download`, with its size
        os.replace(got, dest)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def download(remote: Remote, data_dir: Path, validate: Callable[[Path], Any] | None = None) -> Path:
    """Fetch one file atomically; verify it (SHA-256 and size, else `validate`) before it takes its place."""
    path = remote.path(data_dir)
    try:
        _make_writable_dir(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise DatasetError(f"dataset {remote.dataset}: cannot write {path} ({_describe(e)}); choose a "
                           f"writable data_dir=... (or set $GLOSSY_DATA_DIR), or fetch {remote.url} and put "
                           f"it there by hand") from e
    tmp = Path(tmp_name)
    log.info("downloading %s from %s to %s", remote.filename, remote.url, path)
    try:
        try:
            fetch_url(remote.url, tmp, desc=remote.filename)
        except Exception as e:
            raise DatasetError(
                f"dataset {remote.dataset}: could not download {remote.filename} from {remote.url} "
                f"({_describe(e)}); no file was written. When offline or if the server is gone, fetch the "
                f"file elsewhere and put it at {path}") from e
        problem, _ = checksum_problem(tmp, remote)
        if problem is None and validate is not None:
            try:
                validate(tmp)
            except Exception as e:  # the downloaded bytes are not a readable file of the expected format
                problem = _describe(e)
        if problem is not None:
            raise DatasetCorrupt(
                f"dataset {remote.dataset}: the file downloaded from {remote.url} is corrupt or not the "
                f"expected file ({problem}); it was deleted and nothing was written to {path}. Try again "
                f"later, or fetch a good copy of {remote.filename} elsewhere and put it at {path}", path)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def ensure(remotes: Iterable[Remote], data_dir: Path, download_missing: bool,
           validators: dict[str, Callable[[Path], Any]] | None = None,
           cache: DigestCache | None = None) -> dict[str, str]:
    """Make every file present and verified. Returns {filename: sha256} of the files as they are now.

    Present files are checked against their recorded size and SHA-256 (when known) and never deleted or
    replaced: a bad one is reported with how to fix it. Missing files are downloaded when allowed.
    """
    remotes = list(remotes)
    validators = validators or {}
    missing = [r for r in remotes if not r.path(data_dir).is_file()]
    digests: dict[str, str] = {}
    for r in remotes:
        if r in missing:
            continue
        problem, digests[r.filename] = checksum_problem(r.path(data_dir), r, cache)
        if problem is not None:
            raise corrupt_error(r, data_dir, problem)
    if missing and not download_missing:
        raise missing_error(missing, data_dir)
    for r in missing:
        digests[r.filename] = sha256_file(download(r, data_dir, validators.get(r.filename)))
    return digests


# --------------------------------------------------------------------------------------------- safe pickles

_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and scalars only: a data file must never run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a data pickle holds arrays "
                                         f"only)")
        return super().find_class(module, name)


def load_pickle(data: bytes | Path) -> Any:
    """Load a Python 2 (or 3) pickle of numpy arrays; Python 2 strings are read as latin-1."""
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    return _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()


# --------------------------------------------------------------------------------------------- array cache


def _writable_dir(path: Path) -> bool:
    """Whether to write into `path`: it must allow writing, and its owner-write bit must be set (a folder
    made read-only on purpose, e.g. a shared data folder, is left alone even by root)."""
    try:
        return os.access(path, os.W_OK) and bool(path.stat().st_mode & stat.S_IWUSR)
    except OSError:
        return False


def _make_writable_dir(folder: Path) -> None:
    """Create `folder` unless it or its nearest existing ancestor is read-only (then PermissionError)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not _writable_dir(existing):
        raise PermissionError(f"{existing} is read-only")
    folder.mkdir(parents=True, exist_ok=True)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    _make_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_array(source: Path, source_sha256: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """A binary (0/1) uint8 array parsed from `source`, cached bit-packed beside it.

    The cache `<source>.cache.npz` is used only while it records the SHA-256 of the current source file;
    if the source's folder is read-only the cache goes to <user cache dir>/glossy/parsed/ instead.
    A stale, unreadable or unwritable cache is never an error: the source is parsed again.
    """
    key = f"{CACHE_FORMAT}:{source_sha256}"
    candidates = [source.with_name(source.name + ".cache.npz"),
                  user_cache_dir() / "parsed" / f"{source.name}.{source_sha256[:16]}.cache.npz"]
    for cache in candidates:
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    shape = tuple(int(s) for s in z["shape"])
                    return np.unpackbits(z["bits"], count=int(np.prod(shape))).reshape(shape)
        except (OSError, KeyError, ValueError, EOFError):
            continue
    arr = build()
    if arr.dtype != np.uint8 or (arr.size and arr.max() > 1):
        return arr  # only binary arrays are cached
    payload = {"key": np.array(key), "shape": np.array(arr.shape), "bits": np.packbits(arr.reshape(-1))}
    for cache in candidates:
        try:
            _atomic_write(cache, lambda f: np.savez(f, **payload))
            return arr
        except OSError:
            continue
    log.debug("could not write a parse cache for %s", source)
    return arr


def check_options(dataset: str, options: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(f"dataset {dataset}: unknown option(s) {', '.join(unknown)}; "
                           f"valid: {', '.join(sorted(allowed)) or 'none'}")
