"""The Table-1 sweep's launchers are exercised for real: submitit's local mode (the code path the
SLURM launcher takes, without a cluster) and joblib, each running a tiny multirun to result.json."""

import json

import pytest
from conftest import SMALL_SYNTHETIC, run_glossy

TINY = ["train=quick", *SMALL_SYNTHETIC, "train.epochs=1", "train.batches_per_epoch=2", "train.val_points=50",
        "train.trajectory_every=0", "train.grid=0", "eval.is_samples=3", "eval.bootstrap=0", "eval.ba_iters=5"]


@pytest.mark.parametrize("launcher,extra", [
    ("submitit_local", ["hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"]),
    ("joblib", ["hydra.launcher.n_jobs=2"]),
])
def test_multirun_through_the_sweep_launchers(tmp_path, launcher, extra):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher" if launcher == "submitit_local"
                        else "hydra_plugins.hydra_joblib_launcher")
    p = run_glossy(["train", "-m", "prior=standard,vamp", f"hydra/launcher={launcher}", *extra, *TINY,
                    f"runs_root={tmp_path}/runs"], tmp_path, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    results = sorted((tmp_path / "runs").rglob("result.json"))
    assert [r.parent.name.split("-")[2] for r in results] == ["standard", "vamp"]
    for r in results:
        assert json.loads(r.read_text())["complete"]


def test_the_sweep_script_names_the_36_runs(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "scripts" / "sweep_table1.sh").read_text()
    assert "dataset=mnist,omniglot,caltech101,frey,histopathology,cifar10" in text
    assert "model=vae,hvae,pixelhvae prior=standard,vamp" in text
    assert "hydra/launcher=joblib" in text and "hydra/launcher=submitit_slurm" in text
