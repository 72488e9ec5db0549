"""Atomic writes: every file glossy writes appears whole or not at all (write, fsync, rename)."""

from __future__ import annotations

import datetime as _dt
import io as _io
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    buf = _io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_figure(path: str | Path, fig, **kwargs) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_image_grid(path: str | Path, images: torch.Tensor, nrow: int = 8) -> None:
    from torchvision.utils import save_image

    buf = _io.BytesIO()
    save_image(images.detach().cpu().float().clamp(0, 1), buf, nrow=nrow, format="png")
    atomic_write_bytes(path, buf.getvalue())


LOCK = ".lock"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory for this process: a second `glossy train`/`eval` on the same run (a job
    submitted twice, a requeue while the first still runs) stops with a message instead of interleaving
    writes. The lock is an advisory `flock`, released by the kernel when the process ends in any way,
    kill -9 included, so no stale lock is ever left behind. Temporary files a killed writer left are
    removed once the lock is held (no one else can be writing them)."""
    from .errors import GlossyError

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise GlossyError(f"{run_dir} is in use by another glossy process ({holder}); wait for it to "
                              f"finish or stop it, then re-run the same command to resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{_dt.datetime.now().isoformat(timespec='seconds')}\n".encode(), 0)
        for tmp in run_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)
