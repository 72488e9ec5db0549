"""Every row of the benchmark at each thread count, against the peak measured at that count, written to
bench.csv and bench.md; `main` is `scripts/bench.py`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from .measure import matmul_peak
from .report import COLUMNS, machine_facts, to_markdown
from .rows import (
    bench_best_prior,
    bench_e2e,
    bench_intervals,
    bench_is,
    bench_logistic,
    bench_matrix,
    bench_pythae,
    bench_train,
    e2e_child,
)
from .settings import QUICK_SIZES, parse_settings

log = logging.getLogger("glossy.bench")


def thread_counts(device: torch.device, threads: int | None) -> list[int]:
    """The thread counts to measure at: the one asked for, else 1 and all of torch's default threads (a CPU
    with one core, or a GPU: just the default)."""
    if threads:
        return [int(threads)]
    every = torch.get_num_threads()
    return [1, every] if device.type == "cpu" and every > 1 else [every]


def run_bench(sizes: dict, device: torch.device, results_dir: str | Path, quick: bool = False,
              threads: int | None = None, seed: int = 0, notes: list[str] | None = None) -> tuple[list[dict], dict]:
    """Every row at each thread count (`thread_counts`), the end-to-end row at the last, each against the peak
    measured at its count; bench.csv and bench.md written into results_dir. Returns (rows, facts)."""
    sz = {**sizes, **(QUICK_SIZES if quick else {})}
    t_start = time.perf_counter()
    counts = thread_counts(device, threads)
    repeats = max(3, int(sz["repeats"]) + 2)
    rows: list[dict] = []
    peaks: dict[int, float] = {}
    for t in counts:
        torch.set_num_threads(t)
        peaks[t] = matmul_peak(device, int(sz["peak_n"]), repeats)
        log.info("matmul peak %.1f GFLOP/s on %s with %d thread(s)", peaks[t], device, t)
        rows += _at(_rows_at(sz, device, peaks[t], seed, quick), t)
    t_all = counts[-1]
    if sz.get("e2e", True):  # what a user sees: glossy eval at all threads, and how well the rows predict it
        by = {(r["operation"], r["model"], r["threads"]): r for r in rows if r["prior"] == "standard"}
        rows += _at([bench_e2e(sz, device, peaks[t_all], t_all, by[("importance_sampling", "vae", t_all)],
                               by[("glossy_matrix_bernoulli", "vae", t_all)])], t_all)
    _ratios(rows)
    facts = machine_facts(device, peaks[t_all])
    facts.update(peak_n=sz["peak_n"], repeats=repeats, notes=list(notes or []), threads=counts, peaks=peaks)
    with contextlib.suppress(OSError):
        facts["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    facts["bench_seconds"] = time.perf_counter() - t_start
    _write(rows, facts, Path(results_dir), quick)
    return rows, facts


def _rows_at(sz: dict, device, peak: float, seed: int, quick: bool) -> list[dict]:
    """Every operation's row at the current thread count. Importance sampling: each standard model and its
    VampPrior twin measured back to back, twice (once in the quick mode), the best of each."""
    rows = [bench_train(name, sz, device, peak, seed) for name in ("vae", "hvae", "pixelhvae")]
    for name in ("vae", "hvae", "pixelhvae"):
        pair: dict[str, dict] = {}
        for _ in range(1 if quick else 2):
            for prior in ("standard", "vamp"):
                r = bench_is(name, prior, sz, device, peak, seed)
                if prior not in pair or r["throughput"] > pair[prior]["throughput"]:
                    pair[prior] = r
        rows += [pair["standard"], pair["vamp"]]
    pythae = bench_pythae(sz, device, peak, seed)
    return rows + [bench_matrix("binary", sz, device, peak, seed), bench_matrix("gray", sz, device, peak, seed),
                   bench_intervals(sz, device, peak, seed), bench_best_prior(sz, device, peak, seed),
                   *bench_logistic(sz, device, peak, seed)] + ([pythae] if pythae else [])


def _at(rows: list[dict], t: int) -> list[dict]:
    for r in rows:
        r["threads"] = t
        log.info("%2d thread(s) %-26s %-9s %-8s %10.4g %s  %5.1f%% of peak  speed-up %s", t, r["operation"],
                 r["model"], r["prior"], r["throughput"], r["unit"], r["pct_of_peak"], r.get("speedup"))
    return rows


def _ratios(rows: list[dict]) -> None:
    """Each VampPrior row's time against its standard twin; each row's throughput against its 1-thread twin."""
    by = {(r["operation"], r["model"], r["prior"], r["threads"]): r for r in rows}
    for (op, model, prior, t), r in by.items():
        if op == "importance_sampling" and prior == "vamp" and (op, model, "standard", t) in by:
            r["vs_standard_twin"] = by[(op, model, "standard", t)]["throughput"] / r["throughput"]  # time ratio
        if t != 1 and (op, model, prior, 1) in by and op != "e2e_eval":
            r["vs_1_thread"] = r["throughput"] / by[(op, model, prior, 1)]["throughput"]


def _write(rows: list[dict], facts: dict, out: Path, quick: bool) -> None:
    import pandas as pd

    from glossy.atomic import atomic_write_text

    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    df["matmul_peak_gflops"] = df["threads"].map(facts["peaks"])
    for k in ("date", "host_cpu", "cpu_count", "torch", "device", "loadavg_start", "loadavg_end"):
        df[k] = facts.get(k)
    df["quick"] = quick
    extra = [c for c in df.columns if c not in COLUMNS]
    atomic_write_text(out / "bench.csv", df[COLUMNS + extra].to_csv(index=False))
    atomic_write_text(out / "bench.md", to_markdown(rows, facts, quick))


def main(argv: list[str]) -> int:
    """`scripts/bench.py [--flags]`; `e2e-child N S THREADS DEVICE GROUPS`: the end-to-end row's fresh process."""
    from ..main import flush_denormals, full_float32

    flush_denormals()  # measure what `glossy train` / `eval` run with
    full_float32()
    if argv[:1] == ["e2e-child"]:
        n, s, threads, device, groups = argv[1:6]
        print(json.dumps(e2e_child(int(n), int(s), int(threads) or None, device, int(groups))))
        return 0
    try:
        st = parse_settings(argv)
    except ValueError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    from ..runs import resolve_device

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    sizes = {f.name: getattr(st, f.name) for f in fields(st)
             if f.name not in ("quick", "threads", "notes", "device", "results_dir", "seed")}
    rows, facts = run_bench(sizes, resolve_device(st.device), st.results_dir, quick=st.quick, threads=st.threads,
                            seed=st.seed, notes=st.notes)
    print(to_markdown(rows, facts, st.quick))
    print(f"wrote {Path(st.results_dir) / 'bench.csv'} and bench.md ({facts['bench_seconds']:.0f} s)")
    return 0
