"""The resume journal: importance-sampled points that a cut-off evaluation finished, kept for its re-run."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from .atomic import atomic_torch_save


def fingerprint(model, x: torch.Tensor) -> str:
    """sha256 of the model's weights and buffers and of the data: what importance sampling's numbers rest on."""
    h = hashlib.sha256()
    for name, t in [*sorted(model.state_dict().items()), ("x", x)]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ISJournal:
    """Where importance sampling leaves the points it has finished, so that an evaluation cut off (a
    session's end, a cluster's pre-emption) goes on from them when it is run again: one file, written
    atomically at most every `every_s` seconds, holding each stage's finished points under a key of what
    their numbers rest on (the model's weights, the data, S, the sample chunking, the stage's seed). A
    point's draws are seeded per point, so the points after a resume are those an uninterrupted run
    draws. A key that does not match (another checkpoint, other settings) is ignored and overwritten."""

    def __init__(self, path: str | Path, every_s: float = 60.0) -> None:
        self.path, self.every_s = Path(path), every_s
        self._last = time.monotonic()

    def _read(self) -> dict:
        try:
            got = torch.load(self.path, weights_only=True)
        except Exception:  # absent, cut off mid-write by an older version, or not ours: start afresh
            return {}
        return got if isinstance(got, dict) else {}

    def resume(self, stage: str, key: dict, n: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(points done, log_px [n], elbo [n]) of `stage` from the file when its key matches, else 0 done."""
        got = self._read().get(stage)
        if not got or got.get("key") != key or len(got.get("log_px", ())) != n:
            return 0, torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
        return int(got["done"]), got["log_px"].to(torch.float64), got["elbo"].to(torch.float64)

    def record(self, stage: str, key: dict, done: int, log_px: torch.Tensor, elbo: torch.Tensor,
               force: bool = False) -> None:
        if not force and time.monotonic() - self._last < self.every_s:
            return
        data = self._read()
        data[stage] = {"key": key, "done": done, "log_px": log_px.clone(), "elbo": elbo.clone()}
        atomic_torch_save(self.path, data)
        self._last = time.monotonic()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def stage(self, name: str) -> JournalStage:
        """This journal's part for one stage of the evaluation ("test", "held-out fit")."""
        return JournalStage(self, name)


class JournalStage:
    """One stage's part of an `ISJournal`: what importance sampling resumes from and records into."""

    def __init__(self, journal: ISJournal, name: str) -> None:
        self.journal, self.name, self.path = journal, name, journal.path

    def resume(self, key: dict, n: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        return self.journal.resume(self.name, key, n)

    def record(self, key: dict, done: int, log_px: torch.Tensor, elbo: torch.Tensor, force: bool = False) -> None:
        self.journal.record(self.name, key, done, log_px, elbo, force)
