"""`glossy figure`: the paper's Figure 1 for any run — upper and lower bounds on the test NLL over
training epochs, the glossy std on a second axis, and the true NLL where it is known."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from glossy.atomic import atomic_save_figure
from glossy.errors import GlossyError
from glossy.sandwiches import RENAMED


def load_trajectory(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "trajectory.csv"
    if not path.is_file():
        raise GlossyError(f"{run_dir} has no trajectory.csv; train with train.trajectory_every > 0")
    try:
        df = pd.read_csv(path)
        df = df.rename(columns=RENAMED)  # the names of older trajectories
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise GlossyError(f"{path} is not a readable trajectory ({e})") from e
    need = {"epoch", "nll", "lower_bound", "glossy_std"}
    if df.empty or not need <= set(df.columns):
        raise GlossyError(f"{path} lacks the columns {sorted(need - set(df.columns))} or has no rows")
    return df.sort_values("epoch")


def _has(df: pd.DataFrame, col: str) -> bool:
    """The trajectory has column `col` with at least one value (older trajectories lack some)."""
    return col in df and bool(df[col].notna().any())


def draw(df: pd.DataFrame, title: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(df["epoch"], df["nll"], "-", color="C0", label="upper bound: model NLL (IS)")
    ax.plot(df["epoch"], df["lower_bound"], "-", color="C1", label="glossy lower bound: NLL - glossy max (test)")
    if _has(df, "bound_train_atoms"):
        ax.plot(df["epoch"], df["bound_train_atoms"], "-.", color="C1", alpha=0.7,
                label="NLL - glossy max (training codes): a bound on priors over those codes only")
    if _has(df, "exact_lower_bound"):
        ax.plot(df["epoch"], df["exact_lower_bound"], "--", color="C3",
                label="exact finite-latent lower bound")
    if _has(df, "nll_ba"):
        ax.plot(df["epoch"], df["nll_ba"], ":", color="C2", label="NLL of the BA re-weighted prior (in-sample)")
    if _has(df, "nll_ba_heldout"):
        ax.plot(df["epoch"], df["nll_ba_heldout"], "--", color="C2",
                label="held-out BA prior (fitted on validation images)")
    if _has(df, "true_nll"):
        ax.axhline(float(df["true_nll"].dropna().iloc[-1]), color="k", lw=1, label="true NLL")
    lo = min(df["lower_bound"].min(), df.get("exact_lower_bound", df["lower_bound"]).min())
    hi = df["nll"].quantile(0.9) if len(df) > 5 else df["nll"].max()
    if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
        pad = 0.08 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test NLL (nats)")
    ax2 = ax.twinx()
    ax2.plot(df["epoch"], df["glossy_std"], "-", color="C4", alpha=0.6, label="glossy std, test (right axis)")
    if _has(df, "glossy_std_train"):
        ax2.plot(df["epoch"], df["glossy_std_train"], "-.", color="C4", alpha=0.6,
                 label="glossy std, training candidates (right axis)")
    ax2.set_ylabel("glossy std")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # below the axes, so that it never hides a curve, whatever the data set
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def make_figure(checkpoint: str, out: str | None = None) -> list[Path]:
    run = Path(checkpoint).expanduser()
    run = run.parent if run.suffix == ".pt" else run
    if not run.is_dir():
        raise GlossyError(f"checkpoint={checkpoint}: no such run directory")
    df = load_trajectory(run)
    fig = draw(df, title=run.name)
    stem = Path(out) if out else run / "figure1"
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:  # no creation date in the PDF: the same trajectory gives the same bytes
        atomic_save_figure(p, fig, dpi=150, **({"metadata": {"CreationDate": None}} if p.suffix == ".pdf" else {}))
    return paths
