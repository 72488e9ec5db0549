"""Helpers the tests share: the console script, the composed config and one way to shrink it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# the device of the tests that take one: cpu, or GLOSSY_TEST_DEVICE (scripts/device_check.sh sets cuda)
DEVICE = torch.device(os.environ.get("GLOSSY_TEST_DEVICE", "cpu"))
SMALL_SYNTHETIC = ["dataset.options.n_train=600", "dataset.options.n_val=200", "dataset.options.n_test=150"]

# the one test-size configuration: a few steps of a small model on a small synthetic set, a cheap evaluation
TINY = ["train=quick", "dataset.options.n_train=300", "dataset.options.n_val=50", "dataset.options.n_test=40",
        "model.hidden=32", "model.z_dim=4", "train.batch_size=20", "train.batches_per_epoch=5",
        "train.trajectory_every=0", "train.grid=0", "eval.is_samples=5", "eval.jackknife=0", "eval.ba_iters=50"]


def tiny(*overrides: str) -> list[str]:
    """TINY with `overrides` applied (a later value for the same key replaces the earlier one), so that every
    test shrinks the real config the same way and names only what it needs to differ."""
    merged: dict[str, str] = {}
    for o in (*TINY, *overrides):
        merged[o.split("=", 1)[0]] = o
    return list(merged.values())


def images(n: int, input_type: str = "binary", shape=(1, 6, 6), seed: int = 0, p: float = 0.3):
    """n seeded test images: binary (pixels on with probability p) or on the 256-level gray grid."""
    g = torch.Generator().manual_seed(seed)
    if input_type == "binary":
        return torch.bernoulli(torch.full((n, *shape), p), generator=g)
    return (torch.randint(0, 256, (n, *shape), generator=g).float() + 0.5) / 256


def glossy_exe() -> list[str]:
    exe = shutil.which("glossy", path=str(Path(sys.executable).parent)) or shutil.which("glossy")
    assert exe, "the glossy console script is not installed (pip install -e .)"
    return [exe]


def run_glossy(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run(glossy_exe() + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"glossy {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def compose(config_name: str = "train", overrides: list[str] | None = None):
    from glossy_cli.runs import register_resolvers
    from glossy_cli.schema import compose_config

    register_resolvers()
    return compose_config(config_name, overrides or [])


def glossy_in_process(args: list[str], capsys, monkeypatch, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the `glossy` entry point run in this process from `cwd`: what the console
    script does, without a second interpreter importing torch."""
    from glossy_cli import main as main_module

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() sets sys.argv for Hydra
    code = 0
    try:
        main_module.main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_stopped_with_state_saved(line: str, run: Path, signal_name: str = "SIGUSR2") -> int:
    """What glossy promises when a signal stops training, wherever it comes (the set-up or the loop): one line that
    names the signal and the epoch it came before or during, the state after the epoch before it saved in last.pt
    (never marked done), nothing half-written and no result. Returns the saved state's epoch."""
    from glossy_cli.runs import read_checkpoint

    m = re.search(rf"{signal_name} (during|before) epoch (\d+): the state after epoch (\d+) is saved in (\S+); "
                  r"re-run the same command to resume", line)
    assert m, line
    saved = int(m[3])
    assert saved == int(m[2]) - 1 and Path(m[4]) == run / "last.pt", line
    state = read_checkpoint(run / "last.pt")["state"]
    assert state["epoch"] == saved and not state["done"], state
    assert not (run / "result.json").exists()
    assert not [f.name for f in run.rglob("*") if f.name.endswith((".part", ".tmp")) or f.name.startswith(".tmp")]
    return saved
