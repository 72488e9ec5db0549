"""The signals that stop a run, in one place: SIGINT and SIGTERM, and the pre-emption signal of a SLURM job
(SIGUSR2 under submitit). The training loop takes them between two steps (`catch_signals`, `interrupted`), the
evaluation after training stops at once with a message (`stop_on_signals`), and a pre-emption signal that comes
before the loop is ready for it is noted until then (`deferred`, below).

submitit installs its handler when the job starts: checkpoint, `scontrol requeue`, exit. glossy's training loop
takes the signal between two steps, once the last state is on disk, and then hands it to that handler
(`catch_signals`, `interrupted`). Between the job's start and the loop (imports, data, the model:
seconds) the signal would reach submitit's handler directly, in the middle of glossy's set-up, and a job with no
requeue left would end with Hydra's report of a failed job instead of glossy's one line. `deferred` notes it
in that window; the loop then takes it at its first step, as any other (a finished run passes through the loop's
signal handling too). Where glossy ends before the loop (nothing to do, or an error), the noted signal goes to
submitit's handler when the window closes.
"""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

from glossy.errors import GlossyError

log = logging.getLogger("glossy")

# the signal a SLURM job gets ahead of its time limit or pre-emption under submitit (--signal=USR2@<delay>)
PREEMPT_SIGNAL = getattr(signal, "SIGUSR2", None)
PENDING: dict = {}  # while deferred: "hand_over" (submitit's handler), "signum" once the signal has come


def _note(signum, _frame):
    PENDING.setdefault("signum", signum)


@contextmanager
def deferred():
    """Note the pre-emption signal until the training loop takes it over (`take_over`), where a handler for it
    is installed (in a SLURM job); elsewhere nothing changes."""
    handler = signal.getsignal(PREEMPT_SIGNAL) if PREEMPT_SIGNAL is not None else None
    if not callable(handler):
        yield
        return
    PENDING.clear()
    PENDING["hand_over"] = handler
    signal.signal(PREEMPT_SIGNAL, _note)
    try:
        yield
    finally:
        pending = take_over()  # the loop never took it: submitit's handler has the signal now
        if pending.get("signum") is not None:
            pending["hand_over"](pending["signum"], None)


def take_over() -> dict:
    """End the window: restore the launcher's handler and return what was noted ({} when nothing was deferred):
    "hand_over" and, if the signal came, "signum"."""
    if "hand_over" not in PENDING or signal.getsignal(PREEMPT_SIGNAL) is not _note:
        PENDING.clear()
        return {}
    signal.signal(PREEMPT_SIGNAL, PENDING["hand_over"])
    pending = dict(PENDING)
    PENDING.clear()
    return pending


class TrainingInterrupted(GlossyError):
    """A run stopped by a signal, its state saved: one line, exit status 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


@contextmanager
def catch_signals():
    """SIGINT/SIGTERM set a flag that the loop checks after every step (never mid-write). So does the pre-emption
    signal (SIGUSR2) where a handler is installed for it (submitit's, in a SLURM job): `interrupted` then hands
    it to that handler, between steps, once the last epoch's state is on disk."""
    caught: dict = dict(take_over())  # a pre-emption signal noted before the loop is taken at its first step

    def handler(signum, _frame):
        caught.setdefault("signum", signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if PREEMPT_SIGNAL is not None and callable(signal.getsignal(PREEMPT_SIGNAL)):
        old[PREEMPT_SIGNAL] = caught["hand_over"] = signal.getsignal(PREEMPT_SIGNAL)
    for s in old:
        signal.signal(s, handler)
    try:
        yield caught
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def interrupted(caught: dict, message: str) -> TrainingInterrupted:
    """The error that stops training for the signal in `caught`. The pre-emption signal of a SLURM job is first
    handed to the launcher's handler (submitit: checkpoint the job, `scontrol requeue` it, exit; the requeued
    job resumes from last.pt); where it declines to requeue (the time limit reached more often than
    hydra.launcher.max_num_timeout allows), training stops with the state saved, as for SIGTERM."""
    signum = caught["signum"]
    hand_over = caught.get("hand_over")
    if signum == PREEMPT_SIGNAL and hand_over is not None:
        log.warning("%s; the SLURM job is pre-empted or near its time limit: handing over to submitit to requeue "
                    "it", message)
        try:
            hand_over(signum, None)  # requeues and exits (SystemExit) when it can
        except Exception as e:  # submitit's UncompletedJobError: not requeued
            return TrainingInterrupted(f"{message} (the job was not requeued: {e})", signum)
    return TrainingInterrupted(message, signum)


@contextmanager
def stop_on_signals(what: str):
    """After training there is no state left to save (every file is written atomically): SIGINT/SIGTERM
    stop at once with a message and exit code 128 + signum, instead of a traceback or a silent death."""

    def handler(signum, _frame):
        raise TrainingInterrupted(f"{signal.Signals(signum).name} during {what}", signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
