"""Faults provoked for real: SIGTERM and kill -9 mid-epoch against an uninterrupted twin, NaN at a
given step, bad input through the console script, concurrent writers with a reader, and an evaluation
under a small memory budget. Tiny models on tiny synthetic data, so that the file stays fast."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import glossy_models.vae as vae_module
from glossy import __version__
from glossy.errors import GlossyError
from glossy_cli.runs import read_checkpoint
from glossy_cli.signals import TrainingInterrupted
from glossy_cli.table import read_results
from glossy_cli.train import train
from tests.helpers import compose, glossy_exe, run_glossy, tiny

# long enough epochs (200 steps, ~0.6 s) that a signal lands mid-epoch
RESUMABLE = tiny("dataset.options.n_train=3000", "dataset.options.n_val=100", "dataset.options.n_test=50",
                 "train.epochs=4", "train.warmup=2", "train.batch_size=10", "train.batches_per_epoch=200",
                 "train.trajectory_every=2", "train.trajectory_points=20", "train.trajectory_samples=3",
                 "deterministic=true")
EPOCHS = 4
QUICK = tiny()  # in-process runs: a few steps per epoch
NUMBERS = ["nll", "elbo", "glossy_max", "glossy_std", "lower_bound", "nll_ba", "true_nll", "exact_lower_bound"]
OUTPUTS = ["last.pt", "best.pt", "history.csv", "trajectory.csv", "result.json", "points.pt", "config.yaml"]


# --- helpers ---------------------------------------------------------------------------------------------

def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    """`glossy train` in the background; its stdout and stderr go to files in cwd."""
    cwd.mkdir(parents=True, exist_ok=True)
    n = len(list(cwd.glob("out*.txt")))
    out, err = open(cwd / f"out{n}.txt", "w"), open(cwd / f"err{n}.txt", "w")
    p = subprocess.Popen(glossy_exe() + ["train", *args], cwd=cwd, stdout=out, stderr=err, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    p.out_path, p.err_path = cwd / f"out{n}.txt", cwd / f"err{n}.txt"
    out.close()
    err.close()
    return p


def output(p: subprocess.Popen) -> tuple[str, str]:
    return p.out_path.read_text(), p.err_path.read_text()


def wait_until(cond, p: subprocess.Popen | None, timeout: float = 240, what: str = "") -> None:
    t0 = time.monotonic()
    while not cond():
        if p is not None and p.poll() is not None:
            out, err = output(p)
            raise AssertionError(f"glossy exited ({p.returncode}) before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    return (rc, *output(p))


def the_run(cwd: Path) -> Path | None:
    runs = [d for d in (cwd / "runs").glob("*") if d.is_dir()] if (cwd / "runs").is_dir() else []
    assert len(runs) <= 1, runs
    return runs[0] if runs else None


def epochs_done(run: Path) -> int:
    """Rows of history.csv; it is written atomically, so it is always readable."""
    try:
        return len(pd.read_csv(run / "history.csv"))
    except FileNotFoundError:
        return 0


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and plain values, bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_same_as_twin(run: Path, twin: Path) -> None:
    """The resumed run reached exactly what the uninterrupted twin did (deterministic mode, same machine):
    best.pt weights, last.pt (model, optimiser, RNG, early-stopping state), history.csv except its
    wall-clock 'seconds' column, trajectory.csv, and the numbers of result.json."""
    a, b = load(run / "best.pt"), load(twin / "best.pt")
    assert a["epoch"] == b["epoch"] and a["val_loss"] == b["val_loss"]
    assert_same_tensors(a["model_state"], b["model_state"], "best.model_state")
    a, b = load(run / "last.pt"), load(twin / "last.pt")
    assert_same_tensors(a["model_state"], b["model_state"], "last.model_state")
    assert_same_tensors(a["optimizer_state"], b["optimizer_state"], "last.optimizer_state")
    assert_same_tensors(a["rng"], b["rng"], "last.rng")
    sa, sb = dict(a["state"]), dict(b["state"])
    for s in (sa, sb):
        s.pop("train_time_s")
        s["history"] = without_seconds(s["history"])
    assert sa == sb
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (run, twin))
    pd.testing.assert_frame_equal(ha, hb, check_exact=True)
    assert (run / "trajectory.csv").read_text() == (twin / "trajectory.csv").read_text()
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (run, twin))
    for k in NUMBERS + ["best_epoch", "epochs_trained", "best_val_loss", "n_points", "is_samples"]:
        assert ra[k] == rb[k], (k, ra[k], rb[k])


def assert_every_output_readable(run: Path) -> dict:
    """Every file a run leaves is whole: checkpoints load, csv and json parse. Returns what was found."""
    found = {}
    for name in OUTPUTS:
        f = run / name
        if not f.exists():
            continue
        if name == "points.pt":
            found[name] = torch.load(f, weights_only=True)
            assert set(found[name]) >= {"log_px", "elbo", "eval_config"}
        elif name.endswith(".pt"):
            found[name] = read_checkpoint(f)
        elif name.endswith(".csv"):
            found[name] = pd.read_csv(f)
        elif name == "result.json":
            found[name] = json.loads(f.read_text())
            assert found[name]["complete"] is True
        else:
            found[name] = yaml.safe_load(f.read_text())
    # a kill during a write can leave the writer's temporary file: hidden, named .<file>.<random>.tmp,
    # never read by glossy (it only reads the exact names above)
    for f in run.iterdir():
        if f.is_file() and f.name not in OUTPUTS and f.name not in ("train.log", ".lock"):
            assert re.fullmatch(r"\.[\w.]+\.\w+\.tmp", f.name), f.name
    return found


def resumed_from(text: str) -> int | None:
    m = re.search(r"resuming \S+ after epoch (\d+)", text)
    return int(m[1]) if m else None


# --- the uninterrupted twins and the concurrent reader -----------------------------------------------------

class Shared:
    """Two `glossy train` runs (seed 0, the twin of the interrupted runs, and seed 1) writing under one
    runs_root at the same time, while a reader runs `glossy table` over and over and, in this process,
    polls every result.json as `glossy table` reads them."""

    def __init__(self, root: Path):
        self.cwd = root
        self.runs = root / "runs"
        # a stale temporary file of an interrupted writer, half a result: must never be picked up
        stale = self.runs / "synthetic-vae-vamp-seed9"
        stale.mkdir(parents=True)
        (stale / ".result.json.k2j4x8.tmp").write_text('{"dataset": "synthetic", "model": "vae", "nll": 1')
        (stale / ".last.pt.q9w1e3.tmp").write_bytes(b"\x80\x02half a checkpoint")
        # both write under the same runs_root, <root>/runs; seed 1 stops after two epochs
        self.procs = [start_train([*RESUMABLE, "seed=0"], root),
                      start_train([*RESUMABLE, "seed=1", "train.epochs=2"], root)]
        self.table_calls: list[subprocess.CompletedProcess] = []
        self.polls = 0
        self.seen: dict[str, list[str]] = {}  # result.json path -> distinct contents seen
        self.reader_problems: list[str] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._table_loop, daemon=True),
                        threading.Thread(target=self._poll_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def _table(self) -> None:
        res = self.cwd / f"results{len(self.table_calls)}"
        self.table_calls.append(run_glossy(["table", f"runs_root={self.runs}", f"results_dir={res}"], self.cwd,
                                           timeout=120))

    def _table_loop(self) -> None:
        try:
            self._table()  # before any result: a clear error
            # once the shorter run has its result, while the other still trains and writes
            while self.alive() and not list(self.runs.rglob("result.json")):
                time.sleep(0.05)
            if self.alive():
                self._table()
            while self.alive():
                time.sleep(0.1)
            self._table()  # and once both have finished
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def _poll_loop(self) -> None:
        try:
            while not self.done.is_set():
                results, problems = read_results(self.runs)
                self.reader_problems += problems
                for r in results:
                    text = (self.runs / r["run"] / "result.json").read_text()
                    seen = self.seen.setdefault(r["run"], [])
                    if text not in seen:
                        seen.append(text)
                self.polls += 1
                time.sleep(0.03)
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def wait(self) -> None:
        for p in self.procs:
            rc, out, err = finish(p)
            assert rc == 0, f"{out[-3000:]}\n{err[-3000:]}"
        for t in self.threads[:1]:
            t.join(300)
        self.done.set()
        self.threads[1].join(60)
        assert not self.errors, self.errors

    def run_dir(self, seed: int) -> Path:
        (d,) = [d for d in self.runs.iterdir() if d.name.startswith(f"synthetic-vae-standard-seed{seed}__")]
        return d


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    s = Shared(tmp_path_factory.mktemp("shared"))
    yield s
    for p in s.procs:
        if p.poll() is None:
            p.kill()
    s.done.set()


# --- 1. interruption ------------------------------------------------------------------------------------

@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_sigterm_mid_epoch_exits_with_the_resume_message_and_resuming_equals_the_twin(shared, tmp_path):
    p = start_train(RESUMABLE, tmp_path)
    wait_until(lambda: the_run(tmp_path) is not None and epochs_done(the_run(tmp_path)) >= 1, p, what="epoch 1")
    run = the_run(tmp_path)
    epoch_s = float(pd.read_csv(run / "history.csv")["seconds"].iloc[0])
    time.sleep(0.4 * epoch_s)  # well inside epoch 2
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc == 128 + signal.SIGTERM, f"{out[-2000:]}\n{err[-2000:]}"
    m = re.search(r"glossy: error: SIGTERM during epoch (\d+): the state after epoch (\d+) is saved in (\S+); "
                  r"re-run the same command to resume", err)
    assert m, err[-2000:]
    assert "Traceback" not in out + err
    stopped_in, kept = int(m[1]), int(m[2])
    assert kept == stopped_in - 1 and 1 <= kept < EPOCHS
    assert Path(m[3]) == run / "last.pt"
    found = assert_every_output_readable(run)
    assert found["last.pt"]["state"]["epoch"] == kept and not found["last.pt"]["state"]["done"]
    assert len(found["history.csv"]) == kept and "result.json" not in found

    again = run_glossy(["train", *RESUMABLE], tmp_path, check=True)
    assert resumed_from(again.stdout + again.stderr) == kept
    shared.wait()
    assert_same_as_twin(run, shared.run_dir(0))


@pytest.mark.slow  # a subprocess training killed mid-run
def test_kill_9_at_a_random_moment_leaves_readable_files_and_loses_at_most_the_epoch_in_progress(shared, tmp_path):
    p = start_train(RESUMABLE, tmp_path)
    wait_until(lambda: the_run(tmp_path) is not None and epochs_done(the_run(tmp_path)) >= 1, p, what="epoch 1")
    run = the_run(tmp_path)
    # a random moment in the next epoch and a half (steps, validation, trajectory or the writes after them)
    seed = random.SystemRandom().randrange(2**32)  # a new moment each run, printed so a failure can be replayed
    print(f"kill -9 delay seed: {seed}")
    delay = random.Random(seed).uniform(0, 1.5 * float(pd.read_csv(run / "history.csv")["seconds"].iloc[0]))
    t0 = time.monotonic()
    while time.monotonic() - t0 < delay:
        time.sleep(0.005)
    seen = epochs_done(run)  # epochs finished (as history.csv shows them) just before the kill
    p.kill()
    assert p.wait(60) == -signal.SIGKILL, f"the run ended before the kill (delay {delay:.3f} s)"
    found = assert_every_output_readable(run)
    last = found["last.pt"]["state"]
    # nothing finished is lost (last.pt is written before history.csv), only the epoch in progress
    assert last["epoch"] >= seen >= 1, (delay, seen, last["epoch"])
    assert last["epoch"] - 1 <= len(found["history.csv"]) <= last["epoch"], delay
    assert found["best.pt"]["epoch"] <= last["epoch"] + 1 and "result.json" not in found

    rc, out, err = finish(start_train(RESUMABLE, tmp_path))
    assert rc == 0, (delay, out[-2000:], err[-2000:])
    assert resumed_from(out + err) == last["epoch"], delay
    final = assert_every_output_readable(run)
    # the finished epochs were not redone: their rows, wall-clock seconds included, are those of before
    assert final["last.pt"]["state"]["history"][: last["epoch"]] == last["history"]
    shared.wait()
    assert_same_as_twin(run, shared.run_dir(0))


def _tiny_run(tmp_path: Path, extra: list[str] = ()) -> tuple:
    cfg = compose("train", [*QUICK, f"runs_root={tmp_path}", *extra])
    return cfg, tmp_path / "run"


def test_a_signal_after_the_last_step_stops_before_the_evaluation_and_the_rerun_only_evaluates(tmp_path, monkeypatch):
    import glossy_cli.train as train_module

    cfg, run = _tiny_run(tmp_path, ["train.epochs=2"])
    real = train_module.validation_loss
    calls = []

    def validation_then_sigterm(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # the last epoch's validation: after its last optimiser step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(train_module, "validation_loss", validation_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM after the last epoch \(2\): training is complete") as e:
        train(cfg, run, show_progress=False)
    assert e.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    assert not (run / "result.json").exists() and read_checkpoint(run / "last.pt")["state"]["done"]
    history = (run / "history.csv").read_text()
    monkeypatch.setattr(train_module, "validation_loss", real)
    r = train(cfg, run, show_progress=False)
    assert (run / "history.csv").read_text() == history  # nothing retrained
    assert r["epochs_trained"] == 2 and json.loads((run / "result.json").read_text())["nll"] == r["nll"]


def test_sigint_during_the_evaluation_stops_it_with_a_message_and_writes_nothing(tmp_path, monkeypatch):
    import glossy_cli.eval_cmd as evaluation_module

    cfg, run = _tiny_run(tmp_path, ["train.epochs=1"])
    real = evaluation_module.evaluate

    def interrupted_evaluate(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here
        return real(*a, **k)

    monkeypatch.setattr(evaluation_module, "evaluate", interrupted_evaluate)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT during the evaluation: training is complete") as e:
        train(cfg, run, show_progress=False)
    assert e.value.exit_code == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGINT) == before
    assert not (run / "result.json").exists()
    assert not [f for f in run.iterdir() if f.name.endswith(".tmp")]


@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_a_second_process_on_a_held_run_is_refused_with_the_holder_named(tmp_path):
    from glossy.atomic import run_lock

    cfg, run = _tiny_run(tmp_path, ["train.epochs=1"])
    train(cfg, run, show_progress=False)
    # (Hydra opens the command's log file before glossy runs; everything else must stay as it was)
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file() and f.name != ".lock"}
    with run_lock(run):
        # in-process (a second open file: flock refuses it as it would another process)
        with pytest.raises(GlossyError, match=rf"{re.escape(str(run))} is in use by another glossy process "
                                              rf"\(pid {os.getpid()} on "):
            train(cfg, run, show_progress=False)
        # through the console script: one line, exit 2, no traceback, nothing written
        p = run_glossy(["eval", f"checkpoint={run}", "eval.is_samples=3", "eval.jackknife=0"], cwd=tmp_path)
        assert p.returncode == 2, p.stderr[-2000:]
        assert "is in use by another glossy process" in p.stderr and "Traceback" not in p.stderr
    after = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file() and f.name != ".lock"}
    assert {k: v for k, v in after.items() if not k.endswith(".log")} == before
    # released with the holder: the same command now goes through
    p = run_glossy(["eval", f"checkpoint={run}", "eval.is_samples=3", "eval.jackknife=0"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_a_lock_held_by_a_killed_process_is_free_and_its_temporary_files_are_removed(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from glossy.atomic import run_lock\n"
                               f"with run_lock({str(run)!r}):\n print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    stale = run / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    cfg, _ = _tiny_run(tmp_path, ["train.epochs=1"])
    with pytest.raises(GlossyError, match="in use by another glossy process"):
        train(cfg, run, show_progress=False)
    assert stale.exists()  # never touched while another process may be writing it
    holder.kill()
    holder.wait()
    r = train(cfg, run, show_progress=False)
    assert r["epochs_trained"] == 1 and not stale.exists()
    assert not [f for f in run.iterdir() if f.name.endswith(".tmp")]


def test_rerunning_a_finished_run_returns_its_result_and_other_eval_settings_evaluate_again(tmp_path, monkeypatch):
    import glossy_cli.eval_cmd as evaluation_module

    cfg, run = _tiny_run(tmp_path, ["train.epochs=2"])
    first = train(cfg, run, show_progress=False)
    text = (run / "result.json").read_text()
    calls = []
    real = evaluation_module.evaluate
    monkeypatch.setattr(evaluation_module, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert train(cfg, run, show_progress=False) == first
    assert calls == [] and (run / "result.json").read_text() == text
    cfg2, _ = _tiny_run(tmp_path, ["train.epochs=2", "eval.is_samples=7"])
    again = train(cfg2, run, show_progress=False)
    assert calls == [1] and again["is_samples"] == 7 and again["epochs_trained"] == 2
    assert json.loads((run / "result.json").read_text())["is_samples"] == 7


# --- 2. numerical faults ----------------------------------------------------------------------------------

def _nan_after(monkeypatch, n_calls: int) -> list:
    """VAE.elbo gives a NaN loss from its n-th call on (training steps and validation batches both call it);
    the NaN goes through backward, so the weights become NaN as they would in a real divergence."""
    real = vae_module.VAE.elbo
    calls = []

    def elbo(self, x, beta=1.0):
        out = real(self, x, beta)
        calls.append(1)
        if len(calls) >= n_calls:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    monkeypatch.setattr(vae_module.VAE, "elbo", elbo)
    return calls


def test_nan_loss_names_the_epoch_and_the_last_good_checkpoint_which_eval_then_uses(tmp_path, monkeypatch):
    cfg, run = _tiny_run(tmp_path, ["train.epochs=5"])
    # 5 training steps + 1 validation batch per epoch: call 14 is the 2nd step of epoch 3
    _nan_after(monkeypatch, 14)
    with pytest.raises(GlossyError) as e:
        train(cfg, run, show_progress=False)
    msg = str(e.value)
    best = read_checkpoint(run / "best.pt")  # intact: the NaN epoch never reached it
    assert best["epoch"] in (1, 2)
    assert "training diverged: the training loss became nan in epoch 3" in msg
    assert f"The last good checkpoint is {run / 'best.pt'} from epoch {best['epoch']}" in msg
    assert f"glossy eval checkpoint={run}" in msg and "state after epoch 2" in msg
    assert all(torch.isfinite(v).all() for v in best["model_state"].values() if v.is_floating_point())
    assert read_checkpoint(run / "last.pt")["state"]["epoch"] == 2
    assert len(pd.read_csv(run / "history.csv")) == 2 and not (run / "result.json").exists()
    monkeypatch.undo()
    p = run_glossy(["eval", f"checkpoint={run}", "eval.is_samples=5", "eval.jackknife=0"], tmp_path, check=True)
    r = json.loads((run / "result.json").read_text())
    assert r["best_epoch"] == best["epoch"] and all(math.isfinite(r[k]) for k in NUMBERS)
    assert "glossy max" in p.stdout


def test_nan_in_the_first_epoch_says_there_is_no_good_checkpoint_yet(tmp_path, monkeypatch):
    cfg, run = _tiny_run(tmp_path, ["train.epochs=3"])
    _nan_after(monkeypatch, 1)
    with pytest.raises(GlossyError, match="in epoch 1 .*there is no good checkpoint yet"):
        train(cfg, run, show_progress=False)
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()


def test_nan_in_validation_or_in_the_trajectory_also_names_the_epoch_and_the_good_checkpoint(tmp_path, monkeypatch):
    cfg, run = _tiny_run(tmp_path, ["train.epochs=4", "train.trajectory_every=1", "train.trajectory_points=10",
                                    "train.trajectory_samples=2"])
    real = vae_module.VAE.elbo

    def elbo(self, x, beta=1.0):  # NaN in validation only (eval mode), from epoch 2 on
        out = real(self, x, beta)
        if not self.training and (run / "last.pt").exists():
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    monkeypatch.setattr(vae_module.VAE, "elbo", elbo)
    with pytest.raises(GlossyError, match=rf"the validation loss became nan in epoch 2 \(NaN or inf\)\. The last "
                                          rf"good checkpoint is {re.escape(str(run))}/best\.pt from epoch 1"):
        train(cfg, run, show_progress=False)
    monkeypatch.undo()

    cfg, run = _tiny_run(tmp_path / "t", ["train.epochs=4", "train.trajectory_every=1", "train.trajectory_points=10",
                                          "train.trajectory_samples=2"])
    real_matrix = vae_module.VAE.log_likelihood_matrix
    monkeypatch.setattr(vae_module.VAE, "log_likelihood_matrix", lambda self, x, z: real_matrix(self, x, z) * (
        float("nan") if (run / "last.pt").exists() else 1.0))
    with pytest.raises(GlossyError, match=r"training diverged: the trajectory evaluation failed \(evaluation failed: "
                                          r"the glossy matrix .* in epoch 2 \(NaN or inf\)\. The last good checkpoint "
                                          r"is .* from epoch 1.*state after epoch 1"):
        train(cfg, run, show_progress=False)
    assert read_checkpoint(run / "best.pt")["epoch"] == 1 and read_checkpoint(run / "last.pt")["state"]["epoch"] == 1


@pytest.mark.parametrize("method,quantity", [
    ("log_likelihood_matrix", r"the glossy matrix log l\(x_j \| z_i\) is NaN or infinite for 1600 of 1600"),
    ("log_importance_weights", r"the importance-sampled log p\(x_j\) is NaN or infinite for 40 of 40"),
], ids=["glossy-matrix", "importance-sampling"])
def test_eval_never_writes_nan_statistics(tmp_path, monkeypatch, method, quantity):
    cfg, run = _tiny_run(tmp_path, ["train.epochs=1"])
    train(cfg, run, show_progress=False)
    good = (run / "result.json").read_bytes()
    real = getattr(vae_module.VAE, method)
    monkeypatch.setattr(vae_module.VAE, method, lambda self, *a: real(self, *a) * float("nan"))
    again, _ = _tiny_run(tmp_path, ["train.epochs=1", "eval.is_samples=6"])  # other eval settings: evaluates
    with pytest.raises(GlossyError, match=f"evaluation failed: {quantity} entries .*nothing was written"):
        train(again, run, show_progress=False)  # resumes (done) and re-evaluates
    assert (run / "result.json").read_bytes() == good  # the earlier, finite result is left as it was


# --- 3. bad input through the console script ----------------------------------------------------------------

@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    cfg = compose("train", [*QUICK, "train.epochs=1", f"runs_root={root}"])
    run = root / "synthetic-vae-standard-seed0"
    train(cfg, run, show_progress=False)
    return run


def _bad_checkpoints(root: Path, good: Path) -> dict[str, Path]:
    """Each a directory holding one broken best.pt (or none)."""
    made = {}

    def put(name: str, data: bytes | None = None, ckpt: dict | None = None) -> None:
        d = root / name
        d.mkdir(parents=True)
        if ckpt is not None:
            torch.save(ckpt, d / "best.pt")
        elif data is not None:
            (d / "best.pt").write_bytes(data)
        made[name] = d

    raw = (good / "best.pt").read_bytes()
    put("truncated", raw[: len(raw) // 2])
    put("empty", b"")
    put("text", b"this is not a checkpoint\n")
    put("tensor", ckpt=torch.zeros(3))
    c = load(good / "best.pt")
    put("version", ckpt={**c, "format_version": 99, "glossy_version": "9.0"})
    c = load(good / "best.pt")
    c["model_args"] = {**c["model_args"], "input_shape": [1, 20, 20]}
    put("shape", ckpt=c)
    put("no_best")
    return made


BAD_EVAL = {
    "missing": (None, "no such file or directory"),
    "truncated": ("best.pt", "is not a readable glossy checkpoint"),
    "tensor": ("best.pt", "is not a glossy checkpoint (no glossy format marker)"),
    "version": ("best.pt", f"was written by glossy 9.0 in checkpoint format 99; this glossy ({__version__}) reads "
                           "format 1 only"),
    "shape": ("best.pt", "was trained on binary images of shape [1, 20, 20], but dataset synthetic has binary "
                         "images of shape [1, 28, 28]"),
}
# refused by the same reader; checked in-process (the console script's handling of its error is shown above)
BAD_IN_PROCESS = {
    "empty": ("best.pt", "is not a readable glossy checkpoint (EOFError); it may be truncated"),
    "text": ("best.pt", "is not a readable glossy checkpoint"),
    "no_best": (None, "holds no best.pt; has its training finished an epoch?"),
}
BAD_TRAIN = {
    "budget that cannot fit": (["eval.memory_budget_gb=0.00001"],
                               ["eval.memory_budget_gb=1e-05 cannot hold the evaluation: the 40 x 40 glossy matrix"]),
}


@pytest.fixture(scope="module")
def bad_ckpts(good_run, tmp_path_factory):
    return _bad_checkpoints(tmp_path_factory.mktemp("bad_ckpts"), good_run)


@pytest.fixture(scope="module")
def bad_input(good_run, tmp_path_factory):
    """Every bad command at once (a few processes at a time), for the tests below to inspect."""
    root = tmp_path_factory.mktemp("bad")
    ckpts = _bad_checkpoints(root / "ckpt", good_run)
    jobs = {}
    for name, (leaf, _) in BAD_EVAL.items():
        target = root / "nowhere" / "best.pt" if name == "missing" else ckpts[name] / leaf if leaf else ckpts[name]
        (root / "nowhere").mkdir(exist_ok=True)
        jobs[f"eval {name}"] = (["eval", f"checkpoint={target}", "eval.is_samples=5"], root)
    for name, (args, _) in BAD_TRAIN.items():
        cwd = root / "train" / name.replace(" ", "_")
        cwd.mkdir(parents=True)
        jobs[f"train {name}"] = (["train", *QUICK, *args], cwd)
    empty = root / "empty_runs"
    empty.mkdir()
    jobs["table empty"] = (["table", f"runs_root={empty}", f"results_dir={root / 'res_empty'}"], root)
    mixed = _mixed_runs(root / "mixed_runs", good_run)
    jobs["table mixed"] = (["table", f"runs_root={mixed}", f"results_dir={root / 'res_mixed'}"], root)
    with ThreadPoolExecutor(3) as pool:
        futures = {k: pool.submit(run_glossy, args, cwd, 300) for k, (args, cwd) in jobs.items()}
        done = {k: f.result() for k, f in futures.items()}
    return {"root": root, "ckpts": ckpts, "good": good_run, "mixed": mixed, "results": done,
            "cwd": {k: cwd for k, (_, cwd) in jobs.items()}}


def _mixed_runs(root: Path, good: Path) -> Path:
    """Two good results, one truncated, one with a NaN NLL and one unfinished."""
    r = json.loads((good / "result.json").read_text())
    for name, patch in [("synthetic-vae-standard-seed0", {}), ("synthetic-vae-vamp-seed0", {"prior": "vamp"})]:
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(json.dumps({**r, **patch}))
    text = json.dumps({**r, "model": "hvae"})
    for name, content in [("synthetic-hvae-standard-seed0", text[: len(text) // 2]),
                          ("synthetic-hvae-vamp-seed0", text.replace(f'"nll": {json.dumps(r["nll"])}', '"nll": NaN')),
                          ("synthetic-pixelhvae-standard-seed0", json.dumps({**r, "complete": False}))]:
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(content)
    return root


def _clean_failure(p: subprocess.CompletedProcess) -> str:
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-2000:]
    assert "Traceback" not in out and "Error executing job" not in out, out[-3000:]
    return out


@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
@pytest.mark.parametrize("name", list(BAD_EVAL))
def test_glossy_eval_on_a_missing_truncated_or_foreign_checkpoint(bad_input, name):
    p = bad_input["results"][f"eval {name}"]
    out = _clean_failure(p)
    assert p.returncode == 2
    assert out.count("glossy: error:") == 1 and BAD_EVAL[name][1] in out, out[-2000:]
    d = bad_input["ckpts"].get(name)
    assert d is None or not (d / "result.json").exists()


@pytest.mark.parametrize("name", list(BAD_IN_PROCESS))
def test_empty_text_and_missing_checkpoints_are_refused_clearly(bad_ckpts, name):
    from glossy_cli.runs import find_checkpoint

    leaf, needle = BAD_IN_PROCESS[name]
    d = bad_ckpts[name]
    with pytest.raises(GlossyError) as e:
        read_checkpoint(find_checkpoint(str(d / leaf if leaf else d)))
    assert needle in str(e.value)


@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
@pytest.mark.parametrize("name", list(BAD_TRAIN))
def test_glossy_train_bad_input(bad_input, name):
    p = bad_input["results"][f"train {name}"]
    out = _clean_failure(p)
    for needle in BAD_TRAIN[name][1]:
        assert needle in out, (needle, out[-2000:])
    # refused before any training: no epoch ran, no checkpoint
    assert "epoch 1:" not in out
    assert not list(bad_input["cwd"][f"train {name}"].rglob("*.pt"))


@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_glossy_table_on_a_folder_without_results(bad_input):
    p = bad_input["results"]["table empty"]
    out = _clean_failure(p)
    assert p.returncode == 2 and "glossy: error: no complete result.json under" in out


@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_glossy_table_skips_and_names_malformed_results_and_keeps_the_rest(bad_input):
    p = bad_input["results"]["table mixed"]
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stdout + p.stderr
    mixed = bad_input["mixed"]
    skipped = {line for line in p.stderr.splitlines() if line.startswith("glossy: skipped ")}
    assert len(skipped) == 3, skipped
    for name, why in [("synthetic-hvae-standard-seed0", "not valid JSON"),
                      ("synthetic-hvae-vamp-seed0", "non-finite nll"),
                      ("synthetic-pixelhvae-standard-seed0", "not a complete glossy result")]:
        assert any(str(mixed / name / "result.json") in s and why in s for s in skipped), (name, skipped)
    df = pd.read_csv(bad_input["root"] / "res_mixed" / "table1.csv")
    filled = df[df["nll"].notna()]
    assert sorted(filled["run"]) == ["synthetic-vae-standard-seed0", "synthetic-vae-vamp-seed0"]


# --- 4. concurrency -------------------------------------------------------------------------------------

@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_concurrent_runs_share_no_file_and_a_reader_only_ever_sees_complete_results(shared):
    shared.wait()
    runs = shared.runs
    a, b = shared.run_dir(0), shared.run_dir(1)
    assert a != b
    # every file under runs_root belongs to exactly one run directory (or the stale one planted beforehand)
    for f in runs.rglob("*"):
        if f.is_file():
            assert f.relative_to(runs).parts[0] in (a.name, b.name, "synthetic-vae-vamp-seed9"), f
    for d, seed in ((a, 0), (b, 1)):
        found = assert_every_output_readable(d)
        assert found["result.json"]["seed"] == seed and found["result.json"]["run_dir"] == str(d)
        assert found["config.yaml"]["seed"] == seed
    # the in-process reader polled while both wrote; it never met a partial file, and each run's result
    # was written once, whole
    assert shared.polls >= 10
    assert shared.reader_problems == []
    assert set(shared.seen) == {a.name, b.name}
    for run, texts in shared.seen.items():
        assert texts == [(runs / run / "result.json").read_text()], run
    # `glossy table`, run before, while and after they wrote: never crashed, never picked up a temporary
    # file, and every row it gave is a complete, final result
    final = {d.name: json.loads((d / "result.json").read_text())["nll"] for d in (a, b)}
    assert len(shared.table_calls) >= 2
    for i, p in enumerate(shared.table_calls):
        assert p.returncode in (0, 2), p.stderr[-2000:]
        assert "Traceback" not in p.stdout + p.stderr and ".tmp" not in p.stdout + p.stderr
        if p.returncode == 2:
            assert "no complete result.json under" in p.stderr
            continue
        filled = pd.read_csv(shared.cwd / f"results{i}" / "table1_seeds.csv").dropna(subset=["nll"])  # per run
        assert set(filled["run"]) <= set(final)
        assert all(final[r] == nll for r, nll in zip(filled["run"], filled["nll"]))
    assert shared.table_calls[-1].returncode == 0
    assert set(filled["run"]) == set(final)


# --- 5. memory -----------------------------------------------------------------------------------------

@pytest.mark.slow  # subprocesses of the console script (trainings, signals, locks)
def test_a_small_memory_budget_chunks_logs_it_and_gives_the_same_numbers(shared, tmp_path):
    shared.wait()
    twin = shared.run_dir(0)
    shutil.copy(twin / "best.pt", tmp_path / "best.pt")
    big = json.loads((twin / "result.json").read_text())  # the default 4 GiB budget: one block
    same = [f"eval.{k}={'null' if v is None else v}" for k, v in big["eval_config"].items() if k != "memory_budget_gb"]
    # 2 MiB, 1.1 of them for the held-out fit's 3000 x 100 matrix: the in-sample matrix in blocks of fewer
    # than 50 candidates, the 3000 training candidates streamed in such blocks; importance sampling one point
    # at a time
    p = run_glossy(["eval", f"checkpoint={tmp_path / 'best.pt'}", *same, "eval.memory_budget_gb=0.002"], tmp_path,
                   check=True)
    log = p.stdout + p.stderr
    m = re.search(r"importance sampling in chunks of 1 point x 5 samples; glossy matrix in blocks of (\d+) x 50", log)
    assert m and int(m[1]) < 50, log[-2000:]
    small = json.loads((tmp_path / "result.json").read_text())
    # the default budget: every source in one block (the 3000 training candidates the largest)
    assert big["plan"]["matrix_rows"] == 3000 and small["plan"]["matrix_rows"] == int(m[1])
    # importance sampling is blocked per point: bit for bit the same. The glossy matrices are float32 matrix
    # products whose summation order depends on the block shape (BLAS picks its kernel by size): the same up to
    # float32 rounding (~1e-7 relative), which reaches the statistics as ~1e-7 relative too
    for k in ["nll", "elbo", "true_nll"]:
        assert small[k] == pytest.approx(big[k], rel=1e-12, abs=1e-12), k
    for k in [*NUMBERS, "glossy_max_train", "glossy_std_train", "nll_ba_heldout", "ba_heldout_fit_nll"]:
        assert small[k] == pytest.approx(big[k], rel=1e-6, abs=1e-9), k


def test_an_evaluation_cut_off_in_importance_sampling_goes_on_from_its_finished_points(tmp_path, monkeypatch, caplog):
    import functools
    import logging

    import glossy.importance as evaluate_module
    import glossy.journal as journal_module
    import glossy_cli.eval_cmd as evaluation_module
    from glossy_cli.runs import PARTIAL

    cfg, run = _tiny_run(tmp_path, ["train.epochs=1"])
    monkeypatch.setattr(evaluation_module, "ISJournal", functools.partial(journal_module.ISJournal, every_s=0))
    real = evaluate_module._posterior_draws
    calls = []

    def draws_then_sigint(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # the third group of points: two are finished and kept
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        return real(*a, **k)

    monkeypatch.setattr(evaluate_module, "_posterior_draws", draws_then_sigint)
    with pytest.raises(TrainingInterrupted, match="goes on from the points already finished"):
        train(cfg, run, show_progress=False)
    assert (run / PARTIAL).is_file() and not (run / "result.json").exists()
    assert torch.load(run / PARTIAL, weights_only=True)["test"]["done"] > 0
    monkeypatch.setattr(evaluate_module, "_posterior_draws", real)
    with caplog.at_level(logging.INFO, logger="glossy"):
        resumed = train(cfg, run, show_progress=False)
    assert re.search(r"importance sampling \(test\): going on after the \d+ of \d+ points", caplog.text)
    assert not (run / PARTIAL).exists()  # removed once result.json is written
    (run / "result.json").unlink()
    fresh = train(cfg, run, show_progress=False)  # the whole evaluation again, from no journal
    for k in ("nll", "elbo", "glossy_max", "glossy_std", "nll_ba"):
        assert resumed[k] == fresh[k], k


# --- 5. run identity --------------------------------------------------------------------------------------

def test_a_default_value_written_out_is_the_same_run_and_other_spellings_of_one_value_share_a_run():
    from glossy_cli.runs import effective_overrides, run_name

    def name(*overrides):
        return run_name("synthetic", "vae", "standard", 0, effective_overrides(["train=quick", *overrides]))

    assert name("train.lr=5e-4") == name("train.lr=0.0005") == name() == name("train.warmup=1")  # quick's own
    assert name("train.lr=1e-3") == name("train.lr=0.001") != name()
    assert name("model.hidden=300") == name() != name("model.hidden=64")
    assert name("train.epochs=9") == name("train.early_stopping=90") == name()  # they only extend a training
    assert name("eval.is_samples=7", "train.trajectory_every=2") == name()  # evaluation and trajectory settings


def test_more_epochs_resume_the_finished_run_and_end_as_its_twin_trained_at_once(tmp_path, caplog):
    import logging

    cfg, run = _tiny_run(tmp_path / "a", ["train.epochs=2", "train.early_stopping=50"])
    train(cfg, run, show_progress=False)
    assert read_checkpoint(run / "last.pt")["state"]["stop_reason"] == "reached train.epochs = 2"
    more, _ = _tiny_run(tmp_path / "a", ["train.epochs=4", "train.early_stopping=50"])
    with caplog.at_level(logging.INFO, logger="glossy"):
        extended = train(more, run, show_progress=False)
    assert "train.epochs=4 extends the finished training" in caplog.text and "going on after epoch 2" in caplog.text
    twin_cfg, twin = _tiny_run(tmp_path / "b", ["train.epochs=4", "train.early_stopping=50"])
    direct = train(twin_cfg, twin, show_progress=False)
    assert extended["epochs_trained"] == direct["epochs_trained"] == 4
    cols = lambda d: pd.read_csv(d / "history.csv").drop(columns=["seconds"])  # noqa: E731
    pd.testing.assert_frame_equal(cols(run), cols(twin))
    a, b = (read_checkpoint(d / "best.pt")["model_state"] for d in (run, twin))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert extended["nll"] == direct["nll"]


# --- 6. loggers -------------------------------------------------------------------------------------------

def test_logger_tensorboard_writes_the_epochs_and_the_final_statistics_with_the_real_library(tmp_path):
    pytest.importorskip("tensorboard")  # in the test extra
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, run = _tiny_run(tmp_path, ["train.epochs=2", "logger=tensorboard"])
    result = train(cfg, run, show_progress=False)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train_loss" in tags and "val_loss" in tags and "eval/nll" in tags
    assert [e.step for e in acc.Scalars("val_loss")] == [1, 2]
    hist = pd.read_csv(run / "history.csv")
    assert [e.value for e in acc.Scalars("val_loss")] == pytest.approx(hist["val_loss"].tolist(), rel=1e-6)
    assert acc.Scalars("eval/nll")[0].value == pytest.approx(result["nll"], rel=1e-6)


def test_a_logger_whose_library_is_missing_is_one_line_naming_the_pip_install(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mlflow(name, *a, **k):
        if name == "mlflow":
            raise ImportError("No module named 'mlflow'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cfg, run = _tiny_run(tmp_path, ["train.epochs=1", "logger=mlflow"])
    with pytest.raises(GlossyError, match=r"logger=mlflow needs the mlflow package, which is not installed: "
                                          r"pip install mlflow"):
        train(cfg, run, show_progress=False)
    assert not (run / "last.pt").exists()
