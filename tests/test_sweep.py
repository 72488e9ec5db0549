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

    from glossy_cli.runs import run_name
    from glossy_cli.schema import compose_config

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
    from glossy_cli.schema import compose_config

    cfg = compose_config("train", ["experiment=table1", "hydra/launcher=glossy_slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.gpus_per_node, launcher.mem_gb) == (4320, 8, 1, 32)


def test_a_failed_slurm_job_is_one_line_naming_the_job_its_state_and_what_glossy_said():
    from glossy_cli.slurm import describe_failure

    text = ("Job 7 (task: 0) with path /runs/.submitit/7/7_0_result.pkl\nhas not produced any output (state: FAILED)\n"
            "Error stream produced:\n----------------------------------------\n"
            "submitit WARNING (2026-12-03 14:50:54,853) - Caught signal SIGUSR2 on vm: this job is timed-out.\n"
            "glossy: error: SIGUSR2 during epoch 2: the state after epoch 1 is saved in /runs/r/last.pt; re-run the "
            "same command to resume\nsrun: error: vm: task 0: Exited with exit code 140\n")
    line = describe_failure(text)
    assert "\n" not in line and line.startswith("SLURM job 7 ended in state FAILED without a result: SIGUSR2 during")
    assert "(log: /runs/.submitit/7)" in line and "glossy: error" not in line
    other = describe_failure("Job 9 (task: 0) with path /r/9/9_0_result.pkl\nhas not produced any output (state: "
                             "NODE_FAIL)\nError stream produced:\n----\nKilled\n")
    assert other.startswith("SLURM job 9 ended in state NODE_FAIL without a result: Killed") and "re-run" in other


def test_the_preemption_signal_is_handed_to_submitit_only_once_the_state_is_saved():
    """In a SLURM job submitit handles SIGUSR2 (checkpoint, requeue, exit): training takes it between steps and
    hands it over; where submitit declines to requeue, training stops with its state saved, in one line."""
    import signal

    from glossy_cli import signals

    calls = []

    def requeue(signum, frame):
        calls.append(signum)
        raise SystemExit(-1)  # what submitit does after `scontrol requeue`

    old = signal.signal(signal.SIGUSR2, requeue)
    try:
        with signals.catch_signals() as caught:
            signal.raise_signal(signal.SIGUSR2)
            assert caught["signum"] == signal.SIGUSR2 and calls == []  # only noted: nothing runs mid-step
            with pytest.raises(SystemExit):
                signals.interrupted(caught, "SIGUSR2 during epoch 2: the state after epoch 1 is saved")
        assert calls == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is requeue

        def declines(signum, frame):
            raise RuntimeError("Job not requeued because: timed-out too many times.")

        signal.signal(signal.SIGUSR2, declines)
        with signals.catch_signals() as caught:
            signal.raise_signal(signal.SIGUSR2)
            e = signals.interrupted(caught, "SIGUSR2 during epoch 2: the state after epoch 1 is saved")
        assert isinstance(e, signals.TrainingInterrupted) and e.exit_code == 128 + signal.SIGUSR2
        assert "not requeued: Job not requeued because: timed-out too many times." in str(e)
    finally:
        signal.signal(signal.SIGUSR2, old)
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    with signals.catch_signals() as caught:  # outside SLURM nobody handles SIGUSR2: training leaves it alone
        assert "hand_over" not in caught and signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    signal.signal(signal.SIGUSR2, old)


@pytest.mark.parametrize("when", ["set-up", "loop"])
def test_a_preemption_signal_in_the_set_up_or_the_loop_stops_with_the_state_saved(when, tmp_path, capsys,
                                                                                    monkeypatch):
    """SIGUSR2 before the training loop exists (a SLURM job's imports, data, model) is noted, then taken at the
    loop's start like any other: a new run's initial state (epoch 0) saved to last.pt, submitit's handler called
    once (here it declines to requeue), one line. In the loop (epoch 2) it is taken between two steps with the
    state after epoch 1 saved. Either way the same command then resumes from it and finishes."""
    import signal

    from glossy_cli import signals, train
    from tests.helpers import assert_stopped_with_state_saved, glossy_in_process

    calls = []

    def declines(signum, frame):
        calls.append(signum)
        raise RuntimeError("Job not requeued because: timed-out too many times.")

    real_setup, real_epoch = train.setup, train.train_one_epoch

    def setup_then_signal(cfg, cmd):
        signal.raise_signal(signal.SIGUSR2)  # arrives mid set-up
        assert calls == []  # only noted
        return real_setup(cfg, cmd)

    def signal_in_epoch_2(*a, **kw):
        if kw["desc"] == "epoch 2":
            signal.raise_signal(signal.SIGUSR2)  # arrives mid epoch
            assert calls == []
        return real_epoch(*a, **kw)

    args = ["train", *tiny("dataset=synthetic", "dataset.options.n_train=200", "dataset.options.n_val=50",
                           "dataset.options.n_test=50", f"runs_root={tmp_path / 'runs'}")]
    old = signal.signal(signal.SIGUSR2, declines)
    try:
        if when == "set-up":
            monkeypatch.setattr(train, "setup", setup_then_signal)
        else:
            monkeypatch.setattr(train, "train_one_epoch", signal_in_epoch_2)
        code, _, err = glossy_in_process(args, capsys, monkeypatch, tmp_path)
        assert signal.getsignal(signal.SIGUSR2) is declines and signals.PENDING == {}
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert code == 128 + signal.SIGUSR2 and calls == [signal.SIGUSR2], err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glossy: error: SIGUSR2 ") and "not requeued" in lines[0], err
    (run,) = (tmp_path / "runs").iterdir()
    assert assert_stopped_with_state_saved(lines[0], run) == (0 if when == "set-up" else 1)
    assert ("before epoch 1" if when == "set-up" else "during epoch 2") in lines[0]
    monkeypatch.setattr(train, "setup", real_setup)
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    code, out, err = glossy_in_process(args, capsys, monkeypatch, tmp_path)
    assert code == 0 and (run / "result.json").exists(), err
    assert "resuming" in (run / "train.log").read_text()


def test_a_preemption_signal_noted_where_no_loop_takes_it_goes_to_the_launcher_when_the_window_closes():
    import signal

    from glossy_cli import signals

    calls = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(s))
    try:
        with signals.deferred():
            signal.raise_signal(signal.SIGUSR2)
            assert calls == []
        assert calls == [signal.SIGUSR2] and signals.PENDING == {}
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # outside SLURM: nothing deferred, nothing changed
        with signals.deferred():
            assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, old)
