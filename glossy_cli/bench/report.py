"""The machine's facts and the benchmark's markdown table (drawn by the table's renderer)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import platform
from pathlib import Path

import pandas as pd
import torch

from ..table import markdown_grid

COLUMNS = ["operation", "model", "prior", "data", "unit", "throughput", "floor_flop_per_item", "gflops",
           "pct_of_peak", "threads", "baseline_throughput", "speedup", "speedup_at_peak", "vs_standard_twin",
           "vs_1_thread", "predicted_s", "prediction_error_pct", "run_pct_of_floor", "note"]


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def machine_facts(device: torch.device, peak: float) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "host_cpu": cpu,
             "cpu_count": os.cpu_count(), "torch": str(torch.__version__), "python": platform.python_version(),
             "threads": torch.get_num_threads(), "device": str(device),
             "cpu_capability": torch.backends.cpu.get_cpu_capability(), "matmul_peak_gflops": peak}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        facts["loadavg_start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return facts


def _thr(r: dict) -> str:
    thr = f"{_fmt(r['throughput'])} {r['unit']}"
    if r["operation"] != "e2e_eval":
        return thr
    return (f"**{r['wall_s']:.0f} s wall, {r['peak_rss_mib']:.0f} MiB peak RSS** "
            f"({'measured' if r['e2e_label'] == 'measured' else 'EXTRAPOLATED'}; {thr})")


def _times(key: str):
    return lambda r: (_fmt(r[key]) + "x") if r.get(key) else ""


GRID = [("operation", lambda r: r["operation"]), ("model", lambda r: r["model"]), ("prior", lambda r: r["prior"]),
        ("data", lambda r: r["data"]), ("threads", lambda r: str(r["threads"])), ("throughput", _thr),
        ("floor flop/item", lambda r: _fmt(float(r["floor_flop_per_item"]))), ("GFLOP/s", lambda r: _fmt(r["gflops"])),
        ("% of peak", lambda r: _fmt(r["pct_of_peak"])), ("naive", lambda r: _fmt(r.get("baseline_throughput"))),
        ("speed-up", _times("speedup")), ("speed-up at peak", _times("speedup_at_peak")),
        ("vs standard twin", _times("vs_standard_twin")), ("vs 1 thread", _times("vs_1_thread"))]


def to_markdown(rows: list[dict], facts: dict, quick: bool) -> str:
    title = "# glossy benchmark (scripts/bench.py)" + (" (quick mode: tiny sizes, not a measurement)" if quick else "")
    lines = [title, "",
             f"{facts['date']} · {facts['host_cpu']} · {facts['cpu_count']} CPUs · device {facts['device']}"
             + (f" ({facts['gpu']})" if "gpu" in facts else "")
             + f" · torch {facts['torch']} ({facts['cpu_capability']}) · threads {facts['threads']} · "
             f"load average at start {facts.get('loadavg_start', '?')}, at end {facts.get('loadavg_end', '?')}",
             "", "Matrix-product peak measured in this run before each thread count's rows: "
             + ", ".join(f"**{p:.1f} GFLOP/s** at {t} thread(s)" for t, p in facts["peaks"].items())
             + f" (fp32, {facts.get('peak_n', '?')}^2, best of {facts.get('repeats', '?')}).", "",
             markdown_grid(pd.DataFrame(rows), GRID)]
    lines += ["", "What each column means: docs/performance.md.", "", "Notes per row:", ""]
    lines += [f"- **{r['operation']} / {r['model']} / {r['prior']} / {r['threads']} thread(s)**: {r['note']}"
              for r in rows if r.get("note")]
    lines += ["", *facts.get("notes", [])]
    return "\n".join(lines) + "\n"
