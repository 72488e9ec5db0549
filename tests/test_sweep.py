"""The Table-1 sweep's launchers are exercised for real: submitit's local mode (the code path the
SLURM launcher takes, without a cluster) and joblib, each running a tiny multirun to result.json."""

import json

import pytest

from tests.helpers import run_glossy, tiny

TINY = tiny("train.epochs=1", "train.batches_per_epoch=2", "train.val_points=50", "eval.is_samples=3",
            "eval.ba_iters=5")


@pytest.mark.slow  # two subprocess multiruns
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


def test_the_table1_experiment_is_the_36_run_grid_in_the_directories_of_single_runs():
    import itertools
    from pathlib import Path

    from glossy_cli.config import compose_config
    from glossy_cli.runs import run_name

    cfg = compose_config("train", ["experiment=table1"], return_hydra_config=True)
    grid = {k: v.split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert grid == {"dataset": ["mnist", "omniglot", "caltech101", "frey", "histopathology", "cifar10"],
                    "model": ["vae", "hvae", "pixelhvae"], "prior": ["standard", "vamp"]}
    names = {run_name(d, m, p, 0, ["experiment=table1", f"dataset={d}", f"model={m}", f"prior={p}"])
             for d, m, p in itertools.product(*grid.values())}
    assert len(names) == 36 and "mnist-vae-standard-seed0" in names  # the directory a single run uses
    text = (Path(__file__).resolve().parents[1] / "scripts" / "sweep_table1.sh").read_text()
    assert "-m experiment=table1 hydra/launcher=joblib" in text
    assert "-m experiment=table1 hydra/launcher=glossy_slurm" in text


def test_the_slurm_launcher_config_extends_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from glossy_cli.config import compose_config

    cfg = compose_config("train", ["experiment=table1", "hydra/launcher=glossy_slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.gpus_per_node, launcher.mem_gb) == (4320, 8, 1, 32)
