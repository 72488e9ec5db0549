"""End to end through the real console script: train, resume, eval, table; and bad input."""

import json
import math
import shutil

import pandas as pd
import pytest
import torch

from glossy_cli.runs import read_checkpoint
from tests.helpers import SMALL_SYNTHETIC, run_glossy, tiny

QUICK = tiny(*SMALL_SYNTHETIC, "train.epochs=3", "train.trajectory_every=1", "train.trajectory_points=60",
             "train.trajectory_samples=5", "train.grid=4", "eval.is_samples=20", "eval.jackknife=20")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("e2e")
    p = run_glossy(["train", *QUICK], cwd, check=True)
    runs = list((cwd / "runs").iterdir())
    assert len(runs) == 1
    return cwd, runs[0], p


@pytest.mark.slow  # a console-script training (the fast tier trains in-process only: test_faults.py, test_zoo_e2e.py)
def test_train_writes_a_complete_run_directory(trained):
    cwd, run, p = trained
    for f in ("best.pt", "last.pt", "history.csv", "trajectory.csv", "result.json", "config.yaml",
              "samples.png", "reconstructions.png"):
        assert (run / f).is_file(), f
    r = json.loads((run / "result.json").read_text())
    assert r["complete"] and r["is_samples"] == 20 and r["n_points"] == 150
    for k in ("nll", "glossy_max", "glossy_std", "lower_bound", "nll_ba", "true_nll", "exact_lower_bound"):
        assert math.isfinite(r[k]), k
    # the promise: the model's NLL lies above the true NLL, the exact bound below it
    assert r["nll"] > r["true_nll"] > r["exact_lower_bound"]
    assert r["lower_bound"] <= r["nll_ba"] <= r["nll"]
    # both candidate sources by default, each under its own names, and the held-out prior
    assert r["candidates"] == ["test", "train"] and r["n_candidates_train"] == 600
    for k in ("glossy_max_train", "glossy_std_train", "glossy_var_train", "bound_train_atoms", "nll_ba_heldout",
              "ba_heldout_fit_nll", "nll_heldout_fit_model"):
        assert math.isfinite(r[k]), k
    assert r["glossy_std_train"] ** 2 == pytest.approx(r["glossy_var_train"])
    assert r["n_heldout_fit"] == 200 and r["n_heldout_atoms"] == 600  # validation images, capped by eval.max_points
    # what made its numbers
    from glossy.evaluation import NUMERICS

    st = r["stamp"]
    assert st["numerics"] == NUMERICS and st["glossy"] == r["versions"]["glossy"]
    assert st["solver"] == "working set, sequential quadratic steps (Blahut-Arimoto, plain steps, active set where " \
                           f"it does not fit); tol {r['eval_config']['ba_tol']}, at most " \
                           f"{r['eval_config']['ba_iters']} passes"
    assert r["ba_solver"] == r["ba_heldout_solver"] == "working set"  # both fit the default budget at this size
    assert st["interval_method"] == r["interval_method"] and st["heldout"] == {"atoms": 600, "fit_images": 200,
                                                                               "is_samples": 20}
    assert st["commit"] is None or len(st["commit"].rstrip("+")) == 12
    traj = pd.read_csv(run / "trajectory.csv")
    for k in ("glossy_max_train", "glossy_std_train", "bound_train_atoms", "nll_ba_heldout"):
        assert traj[k].notna().all(), k
    pts = torch.load(run / "points.pt", weights_only=True)
    assert len(pts["log_px"]) == 150 and len(pts["log_c_train"]) == 600
    assert -pts["log_px"].mean().item() == pytest.approx(r["nll"])
    assert len(pd.read_csv(run / "history.csv")) == 3
    assert "true NLL" in p.stdout and "glossy max" in p.stdout
    # not a terminal (a job's log): no carriage-return progress bars in the output or the log
    assert "\r" not in p.stderr and "importance sampling:" not in p.stderr
    assert "\r" not in (run / "train.log").read_text()


@pytest.mark.slow  # two more console-script runs; the resume logic is tested in-process in test_faults.py
def test_rerunning_the_same_command_resumes_instead_of_starting_over(trained, tmp_path):
    cwd, run, _ = trained
    shutil.copytree(cwd, tmp_path / "e2e")  # its own copy: the fixture's run stays as trained for the others
    cwd, run = tmp_path / "e2e", tmp_path / "e2e" / "runs" / run.name
    before = (run / "history.csv").read_text()
    result = (run / "result.json").read_text()
    p = run_glossy(["train", *QUICK], cwd, check=True)  # the same command: trained and evaluated, so it reports
    assert "is complete" in p.stdout + p.stderr and "nothing to do" in p.stdout + p.stderr
    assert (run / "history.csv").read_text() == before  # nothing retrained
    assert (run / "result.json").read_text() == result  # nor evaluated again
    assert f"{json.loads(result)['nll']:12.3f}" in p.stdout
    # more epochs only extend a training: the same run goes on from its last epoch, and says so
    p = run_glossy(["train", *QUICK, "train.epochs=4"], cwd, check=True)
    assert "train.epochs=4 extends the finished training" in p.stdout + p.stderr
    assert [d.name for d in (cwd / "runs").iterdir()] == [run.name]
    history = (run / "history.csv").read_text()
    assert history.startswith(before) and len(history.splitlines()) == len(before.splitlines()) + 1
    assert json.loads((run / "result.json").read_text())["epochs_trained"] == 4


@pytest.mark.slow  # two more console-script runs (glossy eval and glossy table are tested in-process elsewhere)
def test_eval_and_table(trained, tmp_path):
    cwd, run, _ = trained
    p = run_glossy(["eval", f"checkpoint={run}", "eval.is_samples=7", "eval.jackknife=0"], cwd, check=True)
    r = json.loads((run / "result.json").read_text())
    assert r["is_samples"] == 7 and "glossy_max_ci" not in r
    # the run's own best.pt: what result.json said of the training is kept
    assert r["epochs_trained"] == 3 and r["stop_reason"] == "reached train.epochs = 3" and r["train_time_s"] > 0
    assert r["checkpoint"] == str(run / "best.pt") and r["best_epoch"] == read_checkpoint(run / "best.pt")["epoch"]
    p = run_glossy(["table", f"runs_root={cwd / 'runs'}", f"results_dir={tmp_path / 'res'}"], cwd, check=True)
    df = pd.read_csv(tmp_path / "res" / "table1.csv")
    filled = df[df["nll"].notna()]
    assert len(filled) >= 1
    assert set(filled["dataset"]) == {"synthetic"}
    assert filled[["nll", "glossy_max", "glossy_std"]].apply(lambda c: c.map(math.isfinite)).all().all()
    assert (tmp_path / "res" / "table1.md").read_text().count("synthetic") >= 1
    assert "glossy" in p.stdout


SLOW = pytest.mark.slow  # the console script in a subprocess; tests/test_config.py checks every key in-process


@pytest.mark.parametrize("args,needle", [
    (["train", "dataset=nosuch"], "dataset=nosuch: must be one of caltech101, cifar10, file, frey"),
    pytest.param(["train", "model.z_dim=abc"], "model.z_dim=abc: must be an integer", marks=SLOW),
    pytest.param(["train", "prior=vamp", "prior.n_components=-5"], "prior.n_components=-5: must be at least 1",
                 marks=SLOW),
    pytest.param(["train", "eval.is_sampels=5"], "eval.is_sampels is not a setting of eval; valid: is_samples,",
                 marks=SLOW),
    pytest.param(["train", "prior=gaussian"], "prior=gaussian: must be one of standard, vamp", marks=SLOW),
    pytest.param(["frobnicate"], "unknown command 'frobnicate'", marks=SLOW),
])
def test_bad_input_gives_one_clear_message_and_no_traceback(tmp_path, args, needle):
    # the console script end to end (every other bad value: tests/test_config.py, in-process; bad checkpoints,
    # budgets and result files: tests/test_faults.py)
    p = run_glossy(args, tmp_path)
    assert p.returncode == 2
    out = p.stdout + p.stderr
    assert needle in out
    assert "Traceback" not in out
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("glossy: error: ")
    assert len(lines) == 1 or args[0] == "frobnicate"  # an unknown command is followed by the usage
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.slow  # the collect script: glossy figure and glossy table in subprocesses
def test_collect_results_copies_the_small_artefacts_draws_the_figure_and_never_a_checkpoint(trained, tmp_path):
    import os
    import subprocess
    from pathlib import Path

    from tests.helpers import glossy_exe

    cwd, run, _ = trained
    script = Path(__file__).resolve().parents[1] / "scripts" / "collect_results.sh"
    out = tmp_path / "results"
    p = subprocess.run([str(script), str(cwd / "runs"), str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "GLOSSY": glossy_exe()[0], "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    dest = out / "runs" / run.name
    for f in ("result.json", "config.yaml", "history.csv", "trajectory.csv", "samples.png", "figure1.png",
              "figure1.pdf"):
        assert (dest / f).is_file() and (dest / f).stat().st_size > 0, f
    assert (dest / "result.json").read_bytes() == (run / "result.json").read_bytes()
    assert not list(out.rglob("*.pt"))
    assert (out / "table1.csv").is_file() and run.name in (out / "table1.csv").read_text()
    bad = subprocess.run([str(script), str(tmp_path / "nowhere"), str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such runs_root" in bad.stderr


def test_train_and_eval_flush_subnormal_floats():
    # subnormal arithmetic is many times slower on x86 CPUs (measured: a Frey HVAE VampPrior epoch 11-20 s
    # instead of 1-2 s); glossy train and eval turn it off before any work
    from glossy_cli.main import flush_denormals

    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 1.0).item() > 0  # subnormals are kept by default
    try:
        flush_denormals()
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)


def test_train_and_eval_keep_full_float32_on_a_gpu():
    # cuDNN may use TF32 for convolutions by default; glossy turns it off so GPU and CPU numbers agree
    from glossy_cli.main import full_float32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        full_float32()
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
