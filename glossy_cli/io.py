"""Atomic writes: every file glossy writes appears whole or not at all (write, fsync, rename)."""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
