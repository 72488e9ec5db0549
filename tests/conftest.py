"""Shared fixtures (the helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import SMALL_SYNTHETIC, compose, tiny


@pytest.fixture
def quick_cfg(tmp_path):
    # a model trained enough that each test candidate's own image dominates its log c (test_scripts relies on it)
    return compose("train", tiny(*SMALL_SYNTHETIC, f"runs_root={tmp_path}/runs", "train.epochs=3",
                                 "model.hidden=300", "model.z_dim=40", "train.batches_per_epoch=30",
                                 "train.trajectory_every=1", "train.trajectory_points=50", "train.trajectory_samples=5",
                                 "train.grid=4", "eval.is_samples=10", "eval.bootstrap=10"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
