"""Every (model, prior) pair trains one quick epoch and produces a result.json with finite glossy
statistics, on binary and gray (logistic-256) generated fixtures."""

import json
import math

import pytest
import torch

from glossy_cli.train import train
from glossy_datasets import registry as datasets
from glossy_datasets.base import DatasetMeta, Splits
from tests.helpers import compose, tiny

PAIRS = [(m, p) for m in ("vae", "hvae", "pixelhvae") for p in ("standard", "vamp")]
TINY = tiny("train.epochs=1", "train.batches_per_epoch=3", "train.trajectory_every=1", "train.trajectory_points=8",
            "train.trajectory_samples=3", "eval.is_samples=4", "eval.jackknife=10", "eval.ba_iters=20",
            "eval.autoregressive_max_candidates=6")


def fixture(input_type):
    """A small generated dataset of 10x8 images (the model code is shape-generic; 28x28 runs are in
    test_cli.py), binary or on the 256-level gray grid."""

    def load(data_dir=None, download=False):
        g = torch.Generator().manual_seed(0)
        if input_type == "binary":
            k = lambda n: torch.bernoulli(torch.full((n, 1, 10, 8), 0.3), generator=g)
        else:
            k = lambda n: (torch.randint(0, 256, (n, 1, 10, 8), generator=g).float() + 0.5) / 256
        meta = DatasetMeta(name=f"zoo-{input_type}", input_type=input_type, shape=(1, 10, 8))
        return Splits(k(60), k(20), k(16), meta)

    return load


@pytest.fixture(scope="module", autouse=True)
def zoo_datasets():
    """Datasets of their own, added through the registry as a researcher would add one."""
    for kind in ("binary", "gray"):
        datasets.register(f"zoo-{kind}", fixture(kind))
    yield
    for kind in ("binary", "gray"):
        datasets.unregister(f"zoo-{kind}")


@pytest.mark.parametrize("model,prior", PAIRS)
@pytest.mark.parametrize("data", ["binary", "gray"])
def test_every_model_and_prior_trains_and_evaluates(tmp_path, model, prior, data):
    over = [f"model={model}", f"prior={prior}", *TINY] + (["prior.n_components=7"] if prior == "vamp" else [])
    if model == "pixelhvae" and prior == "vamp":
        over[over.index("train.grid=0")] = "train.grid=1"  # one autoregressive sample
    cfg = compose("train", over)
    cfg.dataset = {"name": f"zoo-{data}", "options": {}}
    r = train(cfg, tmp_path / "run", show_progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["model"] == model and saved["prior"] == prior and saved["dataset"] == f"zoo-{data}"
    for k in ("nll", "glossy_max", "glossy_std", "lower_bound", "nll_ba"):
        assert math.isfinite(r[k]) and saved[k] == r[k], k
    assert r["lower_bound"] <= r["nll_ba"] <= r["nll"] + 1e-9
    assert (tmp_path / "run" / "trajectory.csv").is_file()
    if model == "pixelhvae":
        assert r["n_candidates"] == 6
    if "train.grid=1" in over:
        assert (tmp_path / "run" / "samples.png").stat().st_size > 0
