"""The pre-emption signal of a SLURM job (SIGUSR2 under submitit) before the training loop is ready for it.

submitit installs its handler when the job starts: checkpoint, `scontrol requeue`, exit. glossy's training loop
takes the signal between two steps, once the last state is on disk, and then hands it to that handler
(`train._catch_signals`, `train.interrupted`). Between the job's start and the loop (imports, data, the model:
seconds) the signal would reach submitit's handler directly, in the middle of glossy's set-up, and a job with no
requeue left would end with Hydra's report of a failed job instead of glossy's one line. `deferred` notes it
in that window; the loop then takes it at its first step, as any other (a finished run passes through the loop's
signal handling too). Where glossy ends before the loop (nothing to do, or an error), the noted signal goes to
submitit's handler when the window closes.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

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
