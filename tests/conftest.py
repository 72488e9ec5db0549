"""Shared fixtures (the helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import SMALL_SYNTHETIC, compose, tiny


def pytest_configure(config):
    """One torch thread for the tests and every process they start (a test about threads sets its own): on a
    machine whose other cores are busy, more threads than free cores make OpenMP's threads wait on each other."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The cluster tier (it starts a SLURM cluster on this machine) runs only when asked for: `-m cluster`."""
    if "cluster" in (config.getoption("markexpr") or ""):
        return
    kept = [i for i in items if i.get_closest_marker("cluster") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("cluster") is not None])
        items[:] = kept


@pytest.fixture
def quick_cfg(tmp_path):
    # a model trained enough that each test candidate's own image dominates its log c (test_scripts relies on it)
    return compose("train", tiny(*SMALL_SYNTHETIC, f"runs_root={tmp_path}/runs", "train.epochs=3",
                                 "model.hidden=300", "model.z_dim=40", "train.batches_per_epoch=30",
                                 "train.trajectory_every=1", "train.trajectory_points=50", "train.trajectory_samples=5",
                                 "train.grid=4", "eval.is_samples=10", "eval.jackknife=10"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
