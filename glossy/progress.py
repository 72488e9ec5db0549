"""Progress of the evaluation's long stages: a tqdm bar on a terminal, a log line per tenth in a log file."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("glossy")


class LogProgress:
    """Progress for a log file rather than a terminal (a cluster job's output): one log line at each
    tenth of the work, once the work has run for `quiet_s` seconds (short evaluations stay silent), in
    place of tqdm's carriage-return bar that would fill the log with one long line."""

    def __init__(self, total: int, desc: str, unit: str, quiet_s: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.quiet_s = total, desc, unit, quiet_s
        self.done, self.mark, self.t0, self.base = 0, 1, time.perf_counter(), 0

    def resumed(self, k: int) -> None:
        """k units were done by an earlier, cut-off run: counted as done, but not in the rate."""
        self.done = self.base = k
        self.mark = 10 * k // max(self.total, 1) + 1

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, k: int) -> None:
        self.done += k
        tenth = 10 * self.done // max(self.total, 1)
        if tenth < self.mark:
            return
        self.mark = tenth + 1
        elapsed = time.perf_counter() - self.t0
        if elapsed >= self.quiet_s and self.done < self.total:
            left = elapsed * (self.total - self.done) / max(self.done - self.base, 1)
            log.info("%s: %d/%d %s (%d%%), %s elapsed, about %s left", self.desc, self.done, self.total,
                     self.unit, 100 * self.done // self.total, _hms(elapsed), _hms(left))


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def resumed(progress, k: int) -> None:
    """Tell a progress bar that k units were done before it started, keeping them out of its rate."""
    if isinstance(progress, LogProgress):
        progress.resumed(k)
    elif hasattr(progress, "initial"):  # tqdm: its rate is (n - initial) / elapsed
        progress.initial = progress.n = progress.last_print_n = k
        progress.refresh()
    else:
        progress.update(k)


def progress_bar(show: bool | str, total: int, desc: str, unit: str):
    """show: True, a tqdm bar; "log", LogProgress; False, nothing."""
    from tqdm.auto import tqdm

    if show == "log":
        return LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False)
