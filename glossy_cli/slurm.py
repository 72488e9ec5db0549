"""Sweeps on SLURM (`hydra/launcher=glossy_slurm`, Hydra's submitit launcher): a failed job said in one line.

Every run of a sweep is one SLURM job (submitit). A job that ends without a result (its glossy error, its time
limit, a node failure) makes submitit's `results()` raise UncompletedJobError with the job's whole error stream;
Hydra would print that with a traceback. `glossy_cli.main` lets it through Hydra (HYDRA_FULL_ERROR for such a
sweep) and prints `describe_failure` of it instead: the job, its state, the glossy error it printed (or the
last line of its error stream) and where its log is, then exit status 1. Runs are resumable: the
same command again resumes every unfinished run from its last checkpoint, and finished runs are not redone.
Pre-emption and the time limit are handled in the job (glossy_cli/signals.py, `interrupted`): submitit's SIGUSR2
is taken between training steps, once the last epoch is saved, and the job requeued.
"""

from __future__ import annotations

import re


def describe_failure(text: str) -> str:
    """One line from submitit's UncompletedJobError text (`Job <id> (task: <n>) with path <result pickle>` /
    `has not produced any output (state: <STATE>)` / the job's error stream): the job, its state, the error it
    printed (glossy's own line where there is one, else the stream's last line) and where its log is."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not set(ln.strip()) <= set("-")]
    head = " ".join(lines[:2])
    job, state = re.search(r"Job (\S+) \(task: \d+\)", head), re.search(r"\(state: ([A-Z_]+)", head)
    folder = re.search(r"with path (\S+)/", head)
    said = [ln.removeprefix("glossy: error: ") for ln in lines if ln.startswith("glossy: error: ")]
    others = [ln for ln in lines[2:] if not ln.startswith(("submitit ", "[", "srun: ", "Error stream produced"))]
    what = said[-1] if said else others[-1] if others else (lines[0] if lines else "no error stream")
    out = f"SLURM job {job.group(1)}" if job else "a SLURM job"
    out += f" ended in state {state.group(1)} without a result" if state else " ended without a result"
    out += f": {what} (log: {folder.group(1)})" if folder else f": {what}"
    if not said:
        out += "; re-run the same command to resume the unfinished runs"
    return out + "; the sweep's other jobs go on (squeue)"
