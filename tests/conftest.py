"""Shared fixtures: the real Hydra config, shrunk; tiny synthetic data; a toy model with a known marginal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SMALL_SYNTHETIC = ["dataset.options.n_train=600", "dataset.options.n_val=200", "dataset.options.n_test=150"]


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
    from glossy_cli.config import compose_config
    from glossy_cli.runs import register_resolvers

    register_resolvers()
    return compose_config(config_name, overrides or [])


@pytest.fixture
def quick_cfg(tmp_path):
    return compose("train", ["train=quick", *SMALL_SYNTHETIC, f"runs_root={tmp_path}/runs",
                             "eval.is_samples=10", "eval.bootstrap=10", "train.trajectory_points=50",
                             "train.trajectory_samples=5", "train.grid=4"])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
