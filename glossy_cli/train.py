"""The training loop of the reference setup, resumable, with atomic checkpoints and a trajectory.

`train` reads top to bottom as its steps: set up (data, model, budget check), resume, then per epoch
train_one_epoch -> validate -> stopping_decision -> trajectory point -> save_epoch, and at the end the
evaluation stage (evaluation.py) on the best checkpoint."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from glossy.atomic import atomic_save_image_grid, atomic_torch_save, atomic_write_text, run_lock
from glossy.context import RunOptions
from glossy.errors import GlossyError
from glossy.evaluation import evaluate
from glossy.importance import forked_rng
from glossy.memory import check_budget
from glossy.settings import EvalSettings, candidate_list

from .eval_cmd import (
    candidate_images,
    check_eval_budget,
    eval_config,
    evaluate_and_save,
    training_record,
    up_to_date,
)
from .loggers import make_logger
from .runs import (
    BEST,
    LAST,
    build_model,
    checkpoint_payload,
    load_data,
    model_args,
    read_checkpoint,
    resolve_device,
    same_model,
)
from .schema import check
from .signals import catch_signals, interrupted, stop_on_signals

log = logging.getLogger("glossy")


def epochs_left(epoch: int, es_counter: int, warmup: int, patience: int, max_epochs: int) -> tuple[int, int]:
    """(fewest, most) epochs still to run after `epoch` under the early-stopping rule: the fewest if the
    validation loss never improves again (the counter stays at 0 before the warm-up ends, then counts up
    to patience + 1), the most if it keeps improving (up to train.epochs)."""
    most = max(0, max_epochs - epoch)
    fewest = warmup + patience - epoch if epoch + 1 < warmup else patience + 1 - es_counter
    return min(max(0, fewest), most), most


def seconds_per_epoch(recent) -> float:
    """The time-left estimate's seconds an epoch: the mean of the recent epochs' wall times (a trajectory
    evaluation every few epochs is a real cost, so it stays in), leaving out any epoch over 10 times the
    median: a machine suspended or a process stopped (SIGSTOP) for an hour is not what epochs cost."""
    times = sorted(recent)
    median = times[len(times) // 2]
    kept = [s for s in times if s <= 10 * median]
    return sum(kept) / len(kept)


def progress_line(epoch: int, max_epochs: int, best_epoch: int, es_counter: int, patience: int, warmup: int,
                  seconds_per_epoch: float) -> str:
    """Where a long run stands: epoch count, best epoch, patience left, and the time left as a range."""
    lo, hi = epochs_left(epoch, es_counter, warmup, patience, max_epochs)
    left = "done" if lo == 0 else (
        f"{_duration(lo * seconds_per_epoch)} to {_duration(hi * seconds_per_epoch)} left "
        f"({lo}-{hi} epochs at {seconds_per_epoch:.3g} s)")
    warm = f", KL warm-up until epoch {warmup}" if epoch < warmup else ""
    return (f"epoch {epoch}/{max_epochs}, best {best_epoch}, patience {max(0, patience - es_counter)} of "
            f"{patience} left{warm}; {left}")


def _duration(seconds: float) -> str:
    m = int(round(seconds / 60))
    if m < 1:
        return f"{int(round(seconds))}s"
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h" if d else (f"{h}h{m:02d}m" if h else f"{m}m")


def kl_beta(epoch: int, warmup: int) -> float:
    """The reference's linear warm-up: beta = epoch / warmup (epochs count from 1), capped at 1."""
    return 1.0 if warmup <= 0 else min(1.0, epoch / warmup)


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    st = {"torch": torch.random.get_rng_state(), "shuffle": gen.get_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, gen: torch.Generator, device: torch.device) -> None:
    torch.random.set_rng_state(st["torch"])
    gen.set_state(st["shuffle"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


@torch.no_grad()
def validation_loss(model, x: torch.Tensor, batch: int) -> dict[str, float]:
    """Mean negative ELBO (beta = 1) and its terms over a split, in eval mode."""
    with model.frozen():
        sums = torch.zeros(3, dtype=torch.float64, device=x.device)
        for i in range(0, len(x), batch):
            t = model.elbo(x[i : i + batch], 1.0)
            sums += torch.stack([t["loss"].sum(), t["re"].sum(), t["kl"].sum()]).to(torch.float64)
    loss, re, kl = (sums / len(x)).tolist()
    return {"val_loss": loss, "val_re": re, "val_kl": kl}


def _write_csv(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def _trajectory_settings(cmd) -> EvalSettings:
    """A trajectory point's evaluation: eval.*'s sources and budget on train.trajectory_points test images with
    train.trajectory_samples importance samples, no intervals, a shorter Blahut-Arimoto."""
    e = cmd.eval
    return EvalSettings(is_samples=cmd.train.trajectory_samples, max_points=cmd.train.trajectory_points,
                        candidates=candidate_list(e.candidates), heldout=e.heldout,
                        autoregressive_max_candidates=e.autoregressive_max_candidates,
                        prior_candidates=e.prior_candidates, memory_budget_gb=e.memory_budget_gb,
                        jackknife=0, ba_iters=100, ba_tol=1e-3, seed=e.seed)


def _trajectory_point(model, splits, imgs: dict, cmd, device, subset: torch.Tensor, epoch: int) -> dict:
    with forked_rng(device):
        r = evaluate(model, splits.test[subset], _trajectory_settings(cmd), true_model=splits.meta.true_model,
                     **imgs, run=RunOptions(device, show_progress=False))
    keys = ["nll", "elbo", "glossy_max", "glossy_std", "lower_bound", "nll_ba", "ba_gap", "glossy_max_train",
            "glossy_std_train", "bound_train_atoms", "nll_ba_heldout", "true_nll", "exact_lower_bound"]
    return {"epoch": epoch, **{k: r[k] for k in keys if k in r}}


def _save_grids(model, splits, run_dir: Path, n: int, device) -> None:
    if n <= 0:
        return
    with forked_rng(device), model.frozen():
        torch.manual_seed(0)
        atomic_save_image_grid(run_dir / "samples.png", model.sample(n), nrow=int(math.sqrt(n)) or 1)
        x = splits.test[: max(1, n // 2)].to(device)
        pairs = torch.stack([x, model.reconstruct(x)], 1).flatten(0, 1)  # original, reconstruction, ...
        atomic_save_image_grid(run_dir / "reconstructions.png", pairs, nrow=int(math.sqrt(n)) or 1)


def _diverged(what: str, epoch: int, run_dir: Path) -> str:
    """The message for a non-finite loss in `epoch`; what is on disk is from the epochs before it."""
    good = run_dir / BEST
    if good.exists():
        keep = (f"The last good checkpoint is {good} from epoch {read_checkpoint(good)['epoch']}: it is intact, "
                f"and `glossy eval checkpoint={run_dir}` evaluates it")
    else:
        keep = "No epoch finished with a finite loss, so there is no good checkpoint yet"
    return (f"training diverged: {what} in epoch {epoch} (NaN or inf). {keep}; {run_dir / LAST} still holds "
            f"the state after epoch {epoch - 1}, but resuming from it repeats the same random draws and "
            f"will likely diverge again: to train again, lower train.lr (a new run)")


def new_state() -> dict:
    """The loop's state as last.pt saves it, before the first epoch."""
    return {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "es_counter": 0, "done": False,
            "stop_reason": None, "history": [], "trajectory": [], "train_time_s": 0.0}


def setup(cfg: DictConfig, cmd):
    """Device, data, model (seeded), and the memory-budget checks of the final and trajectory evaluations."""
    device = resolve_device(cmd.device)
    if cmd.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    splits = load_data(cfg)
    margs = model_args(cfg, splits.meta)
    torch.manual_seed(cmd.seed)
    model = build_model(margs).to(device)
    check_eval_budget(model, splits, cfg)  # fails now, not after the training
    if cmd.train.trajectory_every > 0:
        check_budget(model, len(splits.test), _trajectory_settings(cmd), n_train=len(splits.train),
                     n_valid=len(splits.val))
    return device, splits, margs, model


def resume(last: Path, model, opt, gen: torch.Generator, margs: dict, device) -> dict | None:
    """The state that `last` (last.pt) saved, with the model, optimiser and random streams restored from it;
    None when there is no such file (a new run)."""
    if not last.exists():
        return None
    ck = read_checkpoint(last)
    if not same_model(ck["model_args"], margs):
        raise GlossyError(f"{last} belongs to a different model ({ck['model_args']}); "
                          f"use another runs_root or remove that run directory")
    model.load_state_dict(ck["model_state"])
    opt.load_state_dict(ck["optimizer_state"])
    _set_rng_state(ck["rng"], gen, device)
    return ck["state"]


@dataclass
class EpochPlan:
    """What one training epoch runs: the model, its optimiser and step (the loss, compiled or not), the training
    images, their batching and the generator that shuffles them."""

    model: Any
    opt: torch.optim.Optimizer
    step_loss: Callable
    train_x: torch.Tensor
    batch_size: int
    n_batches: int
    gen: torch.Generator
    dynamic_binarization: bool = False
    show_progress: bool = False


def train_one_epoch(plan: EpochPlan, beta: float, stop_check=None, desc: str = "") -> tuple[float, float, float]:
    """One pass of Adam over `plan.n_batches` shuffled batches; the mean (loss, reconstruction, KL) per batch.
    `stop_check()` runs after every step (a pending signal raises there, between steps)."""
    from tqdm.auto import tqdm

    model, x, size = plan.model, plan.train_x, plan.batch_size
    model.train()
    perm = torch.randperm(len(x), generator=plan.gen).to(x.device)
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    with tqdm(total=plan.n_batches, desc=desc, leave=False, disable=not plan.show_progress, unit="batch") as bar:
        for b in range(plan.n_batches):
            xb = x[perm[b * size : (b + 1) * size]]
            if plan.dynamic_binarization:
                xb = torch.bernoulli(xb)
            plan.opt.zero_grad(set_to_none=True)
            loss, re, kl = plan.step_loss(xb, beta)
            loss.backward()
            plan.opt.step()
            sums += torch.stack([loss.detach(), re, kl]).to(torch.float64)
            bar.update(1)
            if b % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.2f}")
            if stop_check is not None:
                stop_check()
    loss, re, kl = (sums / plan.n_batches).tolist()
    return loss, re, kl


def elbo_step(model):
    """The training step's loss: the mean negative ELBO of a batch at this beta, with its two terms detached."""

    def loss_fn(xb, beta):
        terms = model.elbo(xb, beta)
        return terms["loss"].mean(), terms["re"].mean().detach(), terms["kl"].mean().detach()

    return loss_fn


def stopping_decision(state: dict, epoch: int, val_loss: float, *, warmup: int, patience: int,
                      max_epochs: int) -> bool:
    """Record `epoch`'s validation loss in `state`: the best so far, the early-stopping counter (held at 0
    during the KL warm-up), and whether training is done (counter past patience, or train.epochs reached).
    Returns whether this epoch improved on the best."""
    improved = val_loss < state["best_val"]
    if improved:
        state.update(best_val=val_loss, best_epoch=epoch, es_counter=0)
    else:
        state["es_counter"] = 0 if epoch < warmup else state["es_counter"] + 1
    state["epoch"] = epoch
    if state["es_counter"] > patience:
        state.update(done=True, stop_reason=f"early stopping after epoch {epoch}")
    elif epoch >= max_epochs:
        state.update(done=True, stop_reason=f"reached train.epochs = {epoch}")
    return improved


def extend(state: dict, *, patience: int, max_epochs: int) -> str | None:
    """Re-open a finished training whose stopping rule no longer holds under these settings (a larger
    train.epochs, or a patience its counter has not used up): the run's identity leaves both out (runs.EXTENDS),
    so the same command with more epochs goes on from the last epoch. Returns what was extended, or None."""
    if not state["done"] or state["epoch"] >= max_epochs:
        return None
    if str(state["stop_reason"]).startswith("reached train.epochs"):
        what = f"train.epochs={max_epochs}"
    elif state["es_counter"] <= patience:
        what = f"train.early_stopping={patience}"
    else:
        return None
    state.update(done=False, stop_reason=None)
    return what


def _write_tables(run_dir: Path, state: dict) -> None:
    _write_csv(run_dir / "history.csv", state["history"])
    if state["trajectory"]:
        _write_csv(run_dir / "trajectory.csv", state["trajectory"])


def train(cfg: DictConfig, run_dir: str | Path, show_progress: bool = True, cmd=None) -> dict:
    """Train (or resume) the run in `run_dir`, keep the best checkpoint, evaluate it into result.json.
    A run that is already trained and evaluated with the same eval settings is not evaluated again.
    cmd: the checked, typed configuration (`schema.check(cfg)`, which the command has run; None: check here)."""
    cmd = check(cfg) if cmd is None else cmd
    with run_lock(run_dir), contextlib.ExitStack() as closing:  # the logger is closed however the run ends
        run = TrainRun.start(cfg, cmd, Path(run_dir), show_progress, closing)
        state, record = run.begin()
        if record is not None:
            return record
        with catch_signals() as caught:
            recent: deque[float] = deque(maxlen=20)  # wall seconds of the last epochs, for the time-left estimate
            while not state["done"]:
                run.epoch(state, caught, recent)
            if "signum" in caught:  # arrived after the last step of the last epoch: do not start the evaluation
                raise interrupted(caught, f"{signal.Signals(caught['signum']).name} after the last epoch "
                                  f"({state['epoch']}): training is complete and saved in {run.last}; re-run the "
                                  f"same command to evaluate")
        log.info("training finished: %s; best epoch %d", state["stop_reason"], state["best_epoch"])
        return run.finish(state)


@dataclass
class TrainRun:
    """A training run's fixed parts, built once (`start`): its configuration as composed (`cfg`: config.yaml and
    every checkpoint hold it) and as checked and typed (`cmd`: every value the loop reads), where it lives,
    the data, the model and its optimiser (`epochs`), the curves' logger and the trajectory's images."""

    cfg: DictConfig
    cmd: Any
    run_dir: Path
    device: torch.device
    splits: Any
    margs: dict
    epochs: EpochPlan
    val_x: torch.Tensor
    curves: Any
    show_progress: bool
    traj_subset: torch.Tensor
    traj_images: dict

    @classmethod
    def start(cls, cfg: DictConfig, cmd, run_dir: Path, show_progress: bool,
              closing: contextlib.ExitStack) -> TrainRun:
        t = cmd.train
        device, splits, margs, model = setup(cfg, cmd)
        curves = closing.enter_context(contextlib.closing(make_logger(cfg, run_dir)))  # logger=...: curves too
        opt = torch.optim.Adam(model.parameters(), lr=t.lr)
        train_x = splits.train.to(device)
        n_batches = math.ceil(len(train_x) / t.batch_size)
        epochs = EpochPlan(model, opt, torch.compile(elbo_step(model)) if t.compile else elbo_step(model), train_x,
                           t.batch_size, min(n_batches, t.batches_per_epoch or n_batches),
                           torch.Generator().manual_seed(cmd.seed), splits.meta.dynamic_binarization, show_progress)
        traj_subset = torch.randperm(len(splits.test), generator=torch.Generator().manual_seed(0))[
            : t.trajectory_points]
        return cls(cfg, cmd, run_dir, device, splits, margs, epochs, splits.val.to(device)[: t.val_points or None],
                   curves, show_progress, traj_subset,
                   candidate_images(splits, cmd.eval.seed) if t.trajectory_every > 0 else {})

    @property
    def model(self):
        return self.epochs.model

    @property
    def last(self) -> Path:
        return self.run_dir / LAST

    def begin(self) -> tuple[dict, dict | None]:
        """(the loop's state: resumed from last.pt or new, None) or, for a finished run that result.json already
        evaluates with these eval settings, (its state, that record): nothing to do."""
        t, run_dir = self.cmd.train, self.run_dir
        state = resume(self.last, self.model, self.epochs.opt, self.epochs.gen, self.margs, self.device)
        if state is None:
            state = new_state()
        else:
            reason = state["stop_reason"]
            if (what := extend(state, patience=t.early_stopping, max_epochs=t.epochs)) is not None:
                log.info("%s extends the finished training of %s (%s): going on after epoch %d", what, run_dir,
                         reason, state["epoch"])
            elif state["done"] and (record := up_to_date(run_dir, state, eval_config(self.cfg))) is not None:
                log.info("%s is complete (%s; best epoch %d) and result.json already evaluates it with these eval "
                         "settings: nothing to do (`glossy eval checkpoint=%s` evaluates it again)", run_dir,
                         state["stop_reason"], state["best_epoch"], run_dir)
                return state, record
            log.info("resuming %s after epoch %d (best validation loss %.4f at epoch %d)", run_dir,
                     state["epoch"], state["best_val"], state["best_epoch"])
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
        return state, None

    def epoch(self, state: dict, caught: dict, recent: deque) -> None:
        """The next epoch: train, validate, decide, a trajectory point where due, save, log. A signal noted before
        its first step (in the set-up, or between epochs) stops it with the state saved (a new run's initial
        state first); one during it, between two steps."""
        t, epoch, t0 = self.cmd.train, state["epoch"] + 1, time.perf_counter()
        beta = kl_beta(epoch, t.warmup)

        def stop_check(when="during"):
            if "signum" in caught:
                raise interrupted(caught, f"{signal.Signals(caught['signum']).name} {when} epoch {epoch}: the "
                                  f"state after epoch {state['epoch']} is saved in {self.last}; re-run the same "
                                  f"command to resume")

        if "signum" in caught:
            if not self.last.exists():  # a new run: its initial state, for the requeued job to resume from
                self.save_last(state)
            stop_check(when="before")
        losses = train_one_epoch(self.epochs, beta, stop_check, desc=f"epoch {epoch}")
        if not all(math.isfinite(v) for v in losses):
            raise GlossyError(_diverged(f"the training loss became {losses[0]}", epoch, self.run_dir))
        val = validation_loss(self.model, self.val_x, t.val_batch_size)
        if not math.isfinite(val["val_loss"]):
            raise GlossyError(_diverged(f"the validation loss became {val['val_loss']}", epoch, self.run_dir))
        improved = stopping_decision(state, epoch, val["val_loss"], warmup=t.warmup, patience=t.early_stopping,
                                     max_epochs=t.epochs)
        state["train_time_s"] += time.perf_counter() - t0
        state["history"].append({"epoch": epoch, "beta": beta, "train_loss": losses[0], "train_re": losses[1],
                                 "train_kl": losses[2], **val, "best_val": state["best_val"],
                                 "es_counter": state["es_counter"], "seconds": round(time.perf_counter() - t0, 3)})
        if t.trajectory_every > 0 and (epoch % t.trajectory_every == 0 or epoch == 1):
            self.trajectory_point(state, epoch)
        self.save_epoch(state, improved, val["val_loss"])
        self.curves.log_epoch(epoch, state["history"][-1], state["trajectory"][-1] if state["trajectory"]
                              and state["trajectory"][-1]["epoch"] == epoch else None)
        recent.append(time.perf_counter() - t0)  # the whole epoch: training, trajectory, writes
        log.info("epoch %d: beta %.2f train loss %.3f val loss %.3f (best %.3f); %s", epoch, beta, losses[0],
                 val["val_loss"], state["best_val"],
                 progress_line(epoch, t.epochs, state["best_epoch"], state["es_counter"], t.early_stopping,
                               t.warmup, seconds_per_epoch(recent)))

    def trajectory_point(self, state: dict, epoch: int) -> None:
        try:
            state["trajectory"].append(_trajectory_point(self.model, self.splits, self.traj_images, self.cmd,
                                                         self.device, self.traj_subset, epoch))
        except GlossyError as e:  # a non-finite log-likelihood on the trajectory subset
            raise GlossyError(_diverged(f"the trajectory evaluation failed ({e})", epoch, self.run_dir)) from e

    def save_last(self, state: dict) -> None:
        """last.pt: the state to resume from (model, optimiser, random streams, the loop's state), atomically."""
        atomic_torch_save(self.last, checkpoint_payload(
            "last", self.cfg, self.margs, self.model, optimizer_state=self.epochs.opt.state_dict(),
            rng=_rng_state(self.epochs.gen, self.device), state=state))

    def save_epoch(self, state: dict, improved: bool, val_loss: float) -> None:
        """best.pt when the epoch improved, then last.pt (the state to resume from), then the csv files: each
        atomically, in that order, so that a kill at any point leaves a consistent run."""
        if improved:
            atomic_torch_save(self.run_dir / BEST, checkpoint_payload("best", self.cfg, self.margs, self.model,
                                                                      epoch=state["epoch"], val_loss=val_loss))
        self.save_last(state)
        _write_tables(self.run_dir, state)

    def finish(self, state: dict) -> dict:
        """The evaluation of the best checkpoint into result.json (SIGINT/SIGTERM stop it with a message)."""
        with stop_on_signals(f"the evaluation: training is complete and saved in {self.last}; re-run the same "
                              f"command to evaluate (its importance sampling goes on from the points already "
                              f"finished)"):
            _write_tables(self.run_dir, state)  # from last.pt, in case a kill -9 came between it and the csv files
            self.model.load_state_dict(read_checkpoint(self.run_dir / BEST)["model_state"])
            _save_grids(self.model, self.splits, self.run_dir, self.cmd.train.grid, self.device)
            result = evaluate_and_save(self.model, self.splits, self.cfg, self.run_dir, self.device,
                                       training_record(state), self.show_progress or "log")
        self.curves.log_final(result)
        return result
