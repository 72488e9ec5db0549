"""`glossy table`: every result.json under a runs root, laid out as the paper's Table 1 with the
paper's values (Lastras 2019, Table 1) beside ours and the difference."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pandas as pd

from glossy.atomic import atomic_write_text
from glossy.errors import GlossyError
from glossy.sandwiches import upgrade

log = logging.getLogger("glossy")

PAPER_SOURCE = ("Lastras, 'Information theoretic lower bounds on negative log likelihood', ICLR 2019, "
                "Table 1 (test NLL in nats; glossy max and std)")
DATASET_ORDER = ["synthetic", "mnist", "omniglot", "caltech101", "frey", "histopathology", "cifar10"]
MODEL_ORDER = ["vae", "hvae", "pixelhvae"]
PRIOR_ORDER = ["standard", "vamp"]
# The paper's glossy columns are compared with the statistics of candidates taken from the training
# images (`eval.candidates` train): the reading whose magnitudes match the paper's Table 1. Those of the
# in-sample candidates (test: the paper's text, the more conservative bound) are shown beside them.
PAPER_MATCH = "train"
COMPARED = {"nll": "nll", "glossy_max": f"glossy_max_{PAPER_MATCH}", "glossy_std": f"glossy_std_{PAPER_MATCH}"}
# lower_bound: NLL - max log c over the test images' own codes (standing for Theorem 2's bound over every prior);
# bound_train_atoms: the same over the training codes, a bound over the priors on those codes only (older results
# called it lower_bound_train: glossy.sandwiches.upgrade reads them)
OURS = ["glossy_max", "glossy_std", "lower_bound", f"bound_{PAPER_MATCH}_atoms", "nll_ba", "ba_prior_weight",
        "ba_gap", "nll_ba_heldout", "ba_heldout_prior_weight", "ba_heldout_fit_nll", "nll_heldout_fit_model",
        "true_nll", "exact_lower_bound", f"n_candidates_{PAPER_MATCH}", "glossy_max_searched", "lower_bound_searched"]
CIS = ["nll_ci", "glossy_max_ci", "glossy_std_ci", "lower_bound_ci", "nll_ba_ci", "nll_ba_heldout_ci",
       f"glossy_max_{PAPER_MATCH}_ci", f"glossy_std_{PAPER_MATCH}_ci", f"bound_{PAPER_MATCH}_atoms_ci"]
REQUIRED = ["dataset", "model", "prior", "nll"]


def paper_table() -> pd.DataFrame:
    """The paper's Table 1: the one copy, glossy_cli/paper_table1.csv (its first line names the source)."""
    with resources.files("glossy_cli").joinpath("paper_table1.csv").open() as f:
        return pd.read_csv(f, comment="#")


def read_results(runs_root: str | Path) -> tuple[list[dict], list[str]]:
    """(valid results, problems): a malformed or incomplete result.json is named and skipped."""
    root = Path(runs_root)
    results, problems = [], []
    for path in sorted(root.rglob("result.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(f"{path}: not valid JSON ({e})")
            continue
        if not isinstance(r, dict) or not r.get("complete"):
            problems.append(f"{path}: not a complete glossy result")
            continue
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            problems.append(f"{path}: missing {', '.join(missing)}")
            continue
        bad = [k for k in COMPARED.values() if k in r and r[k] is not None
               and (not isinstance(r[k], (int, float)) or not math.isfinite(r[k]))]
        if bad:
            problems.append(f"{path}: non-finite {', '.join(bad)}")
            continue
        r = upgrade(r)  # the names of older results
        r["run"] = str(path.parent.relative_to(root)) if path.parent != root else "."
        r["mc_sd"] = _mc_sd(path.parent / MC_FILE, problems)
        results.append(r)
    return results, problems


MC_FILE = "mc_spread.json"  # beside result.json: scripts/mc_spread.py, the statistics at other eval seeds


def _mc_sd(path: Path, problems: list[str]) -> dict:
    """The sd over evaluation seeds of each statistic from a run's mc_spread.json ({} when there is none)."""
    if not path.is_file():
        return {}
    try:
        sd = upgrade(json.loads(path.read_text())["sd"])
        return {k: float(v) for k, v in sd.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        problems.append(f"{path}: not a readable Monte Carlo spread ({e}); its run is shown without one")
        return {}


def settings_of(r: dict) -> str:
    """What a run trained with besides its seed: its directory's name with the seed taken out
    (`<dataset>-<model>-<prior>[__<overrides>_<hash>]`; the hash leaves the seed out)."""
    name = Path(str(r.get("run_dir") or r.get("run") or "")).name
    return re.sub(r"-seed\d+(?=__|$)", "", name)


# settings that change no estimate: the intervals' (and their older bootstrap names) and the memory budget's chunking
NOT_ESTIMATES = ("jackknife", "interval_level", "bootstrap", "bootstrap_level", "memory_budget_gb")
# settings added after results were made, at the value that reproduces those results: absent and at that value are
# the same evaluation (the sup search off; the held-out fit's null meant all validation images at is_samples until
# its default became 1000 at S <= 500, so stamped results are told apart by their stamp's `heldout`, which records
# what ran, and unstamped ones are never averaged with stamped ones)
ADDED_LATER = {"sup_search_steps": 0, "sup_search_starts": 8, "heldout_fit_points": None, "heldout_is_samples": None}
# the parts of a result's stamp (eval_cmd.stamp) that move an estimate; its code version and commit do not
STAMP_ESTIMATES = ("numerics", "solver", "heldout")


def eval_settings_of(r: dict) -> str:
    """The evaluation settings of a result as one short, stable label (a hash of its eval_config without the
    settings that change no estimate, NOT_ESTIMATES, and of its stamp's parts that move one, STAMP_ESTIMATES,
    where it has a stamp (eval_cmd.stamp): results of older code, unstamped, keep their label and are never
    averaged with stamped ones)."""
    ecfg = {k: v for k, v in (r.get("eval_config") or {}).items()
            if k not in NOT_ESTIMATES and ADDED_LATER.get(k, object()) != v}
    if r.get("stamp"):
        ecfg["stamp"] = {k: r["stamp"].get(k) for k in STAMP_ESTIMATES}
    cfg = json.dumps(ecfg, sort_keys=True)
    return hashlib.sha1(cfg.encode()).hexdigest()[:8]


def build_table(results: list[dict]) -> pd.DataFrame:
    paper = paper_table().set_index(["dataset", "model", "prior"])
    by_key: dict[tuple, list[dict]] = {}
    for r in results:
        by_key.setdefault((r["dataset"], r["model"], r["prior"]), []).append(r)
    datasets = [d for d in DATASET_ORDER if d in paper.index.get_level_values(0) or
                any(k[0] == d for k in by_key)]
    datasets += sorted({k[0] for k in by_key} - set(datasets))
    rows = []
    for d in datasets:
        keys = [(d, m, p) for m in MODEL_ORDER for p in PRIOR_ORDER]
        keys += sorted(k for k in by_key if k[0] == d and k not in keys)
        for key in keys:
            ref = paper.loc[key] if key in paper.index else None
            for r in by_key.get(key, [None]):
                row = {"dataset": key[0], "model": key[1], "prior": key[2], "run": r["run"] if r else None,
                       "seed": r.get("seed") if r else None, "settings": settings_of(r) if r else None,
                       "eval_settings": eval_settings_of(r) if r else None}
                for c, ours_key in COMPARED.items():
                    ours = r.get(ours_key) if r else None
                    theirs = float(ref[c]) if ref is not None else None
                    row[ours_key] = ours
                    row[f"{c}_paper"] = theirs
                    row[f"{c}_diff"] = ours - theirs if ours is not None and theirs is not None else None
                for c in OURS:
                    row[c] = r.get(c) if r else None
                for c in SPREAD:
                    row[f"{c}_mc_sd"] = (r.get("mc_sd") or {}).get(c) if r else None
                for c in CIS:
                    ci = r.get(c) if r else None
                    row[f"{c}_lo"], row[f"{c}_hi"] = (ci if ci else (None, None))
                for c in ("n_points", "is_samples", "best_epoch", "epochs_trained"):
                    row[c] = r.get(c) if r else None
                rows.append(row)
    return pd.DataFrame(rows)


# the columns a seed group reports as mean and sd (the rest: the mean, or the single run's value)
SPREAD = [*COMPARED.values(), "glossy_max", "glossy_std", "lower_bound", f"bound_{PAPER_MATCH}_atoms", "nll_ba",
          "nll_ba_heldout"]
KEY = ["dataset", "model", "prior", "settings", "eval_settings"]


def group_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, prior, training settings, evaluation settings) from the per-run table: the
    mean of every number over the training seeds, the sd (ddof 1) of the SPREAD columns, n_seeds and the seeds;
    the paper's values and the mean difference from them (one paper value per group). Runs with other evaluation
    settings are grouped apart. A group of one run keeps that run's intervals; several report their seed sd."""
    rows = []
    filled = per_seed[per_seed["run"].notna()]
    for _, row in per_seed[per_seed["run"].isna()].iterrows():  # rows not run: kept blank, in place
        rows.append((row.name, {**row.to_dict(), "n_seeds": 0}))
    for _, g in filled.groupby(KEY, sort=False, dropna=False):
        first = g.iloc[0].to_dict()
        out = {k: first[k] for k in ("dataset", "model", "prior", "settings", "eval_settings")}
        out["n_seeds"] = len(g)
        out["seeds"] = ",".join(str(int(v)) for v in sorted(g["seed"].dropna()))
        out["run"] = first["run"] if len(g) == 1 else ";".join(g["run"])
        for c in per_seed.columns:
            if c in out or c == "seed":
                continue
            col = pd.to_numeric(g[c], errors="coerce")
            if c.endswith(("_ci_lo", "_ci_hi")):
                out[c] = first[c] if len(g) == 1 else None
            elif c.endswith("_mc_sd"):  # pooled over the runs that measured it: the root of the mean variance
                out[c] = float((col.dropna() ** 2).mean() ** 0.5) if col.notna().any() else None
                out[c.replace("_mc_sd", "_mc_runs")] = int(col.notna().sum())
            elif col.notna().any():
                out[c] = float(col.mean())
            else:
                out[c] = first[c]
        for c in SPREAD:
            col = pd.to_numeric(g[c], errors="coerce").dropna()
            out[f"{c}_sd"] = float(col.std(ddof=1)) if len(col) > 1 else None
        rows.append((g.index[0], out))
    rows.sort(key=lambda t: t[0])
    return judge(pd.DataFrame([r for _, r in rows]))


VERDICT_SDS = 2.0  # |ours - paper| within this many sd of ours: consistent


def judge(df: pd.DataFrame) -> pd.DataFrame:
    """A verdict on each paper difference (nll, glossy max, glossy std): `consistent` when |ours - paper| is within
    VERDICT_SDS sd over the training seeds, `differs` when not, blank with fewer than two training seeds (no
    training spread to judge by) or no paper value; and its p-value (`paper_p_value`). The seed sd alone: each seed
    was evaluated with its own draws (candidates, importance samples), so its spread already holds the Monte Carlo
    variance. The Monte Carlo sd measured on some runs (scripts/mc_spread.py) stays beside it as information;
    adding it again would count that spread twice and lean every verdict to `consistent`."""
    df = df.copy()
    for c, ours in COMPARED.items():
        diff = pd.to_numeric(df.get(f"{c}_diff"), errors="coerce")
        sd = pd.to_numeric(df.get(f"{ours}_sd"), errors="coerce")
        verdict = pd.Series("", index=df.index, dtype=object)
        ok = diff.notna() & sd.notna()
        verdict[ok] = ["consistent" if abs(d) <= VERDICT_SDS * v else "differs" for d, v in zip(diff[ok], sd[ok])]
        df[f"{c}_verdict"] = verdict
        df[f"{c}_p"] = paper_p_value(diff, sd, pd.to_numeric(df.get("n_seeds"), errors="coerce"))
    return df


def paper_p_value(diff: pd.Series, sd: pd.Series, n: pd.Series) -> pd.Series:
    """Two-sided p-value of the paper's number as one more run of ours: were it a draw from the distribution our
    n seeds come from (same mean, same sd), paper - mean(ours) would be normal with variance sd^2 (1 + 1/n), and
    with the sd estimated from the n seeds, diff / (sd sqrt(1 + 1/n)) is Student's t with n - 1 degrees of
    freedom. Blank with fewer than two seeds. This calibrates the 2-sd verdict, which with n = 3 says `differs`
    for 22.5% of such draws (P(|t_2| > 2 / sqrt(4/3))); p < 0.05 happens for 5% of them."""
    from scipy.stats import t  # scipy is imported only here: `glossy table` with no seed groups never needs it

    ok = diff.notna() & sd.notna() & (sd > 0) & (n >= 2)
    out = pd.Series(float("nan"), index=diff.index)
    stat = diff[ok].abs() / (sd[ok] * (1 + 1 / n[ok]) ** 0.5)
    out[ok] = 2 * t.sf(stat.to_numpy(float), (n[ok] - 1).to_numpy(float))
    return out


def _blank(v) -> bool:
    """No value: None (a missing key) or NaN (a blank cell of the csv)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v, digits: int = 2) -> str:
    if _blank(v):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pm(row, c, digits: int = 2) -> str:
    """mean ± sd over seeds where there are several, else the value."""
    v, sd = row.get(c), row.get(f"{c}_sd")
    if _blank(sd):
        return _fmt(v, digits)
    return f"{_fmt(v, digits)} ± {_fmt(sd, digits)}"


def _ci(row, c) -> str:
    lo, hi = row.get(f"{c}_lo"), row.get(f"{c}_hi")
    if lo is None or hi is None or _blank(lo):
        return ""
    return f"[{lo:.1f}, {hi:.1f}]"


def _rendered(df: pd.DataFrame, columns: list[tuple[str, Callable[[dict], str]]]) -> pd.DataFrame:
    """The table as text cells, one column per (header, cell of a row) in `columns`; pandas renders it."""
    rows = [r.where(pd.notna(r), None).to_dict() for _, r in df.iterrows()]
    return pd.DataFrame([[cell(r) for _, cell in columns] for r in rows], columns=[h for h, _ in columns],
                        dtype=object)


def markdown_grid(df: pd.DataFrame, columns: list[tuple[str, Callable[[dict], str]]]) -> str:
    """A markdown (pipe) table of `df`, one column per (header, cell of a row): Table 1's renderer, which the
    benchmark's table uses too."""
    return _rendered(df, columns).to_markdown(index=False, tablefmt="pipe", disable_numparse=True)


def _verdicts(r: dict) -> str:
    """The row's three verdicts in one cell, `nll ok, max differs, std ok`; blank where none could be given."""
    words = {"consistent": "ok", "differs": "differs"}
    got = [(name, r.get(f"{c}_verdict") or "") for name, c in (("nll", "nll"), ("max", "glossy_max"),
                                                               ("std", "glossy_std"))]
    return ", ".join(f"{name} {words[v]}" for name, v in got if v)


def _p_cell(r: dict) -> str:
    """The row's three p-values of the paper's numbers (`paper_p_value`); blank with one seed."""
    vals = [r.get(f"{c}_p") for c in COMPARED]
    if all(_blank(v) for v in vals):
        return ""
    return ", ".join("-" if _blank(v) else "<0.001" if v < 0.001 else f"{v:.3f}" for v in vals)


def _mc_cell(r: dict) -> str:
    """The row's Monte Carlo sd of nll, glossy max and std (other eval seeds), with how many runs measured it."""
    vals = [r.get(f"{c}_mc_sd") for c in COMPARED.values()]
    if all(_blank(v) for v in vals):
        return ""
    runs = r.get(f"{COMPARED['nll']}_mc_runs")
    return ", ".join(_fmt(v, 2) or "-" for v in vals) + (f" ({int(runs)} runs)" if runs and runs > 1 else "")


def _markdown_columns(m: str) -> list[tuple[str, Callable[[dict], str]]]:
    n_seeds = lambda r: _fmt(int(r["n_seeds"])) if r.get("n_seeds") else ""  # noqa: E731
    return [
        ("dataset", lambda r: r["dataset"]), ("model", lambda r: r["model"]),
        ("prior", lambda r: r["prior"] + r["_label"]), ("seeds", n_seeds),
        ("NLL", lambda r: _pm(r, "nll")), ("NLL (paper)", lambda r: _fmt(r["nll_paper"])),
        ("diff", lambda r: _fmt(r["nll_diff"])),
        ("within 2 sd (nll, max, std)", _verdicts), ("p (nll, max, std)", _p_cell),
        ("MC sd (nll, max, std)", _mc_cell),
        (f"max ({m})", lambda r: _pm(r, f"glossy_max_{m}", 1)), ("95% CI", lambda r: _ci(r, f"glossy_max_{m}_ci")),
        ("max (paper)", lambda r: _fmt(r["glossy_max_paper"], 1)),
        (f"std ({m})", lambda r: _pm(r, f"glossy_std_{m}", 1)), ("95% CI", lambda r: _ci(r, f"glossy_std_{m}_ci")),
        ("std (paper)", lambda r: _fmt(r["glossy_std_paper"], 1)),
        ("max (test)", lambda r: _pm(r, "glossy_max", 1)), ("std (test)", lambda r: _pm(r, "glossy_std", 1)),
        ("lower bound (test)", lambda r: _pm(r, "lower_bound")),
        (f"bound, priors on the {m} codes", lambda r: _pm(r, f"bound_{m}_atoms")),
        ("nll_ba", lambda r: _pm(r, "nll_ba")), ("nll_ba_heldout", lambda r: _pm(r, "nll_ba_heldout")),
        ("true NLL", lambda r: _fmt(r["true_nll"])), ("exact bound", lambda r: _fmt(r["exact_lower_bound"])),
    ]


def to_markdown(df: pd.DataFrame) -> str:
    m = PAPER_MATCH
    intro = (f"Table 1 regenerated by `glossy table`. Paper values: {PAPER_SOURCE}. Blank: not run. "
             f"The paper's glossy max and std are compared with ours from candidates at the {m}ing images' codes "
             f"({m}: the reading that matches the paper's magnitudes); test: candidates at the evaluated images' "
             "own codes (the paper's text). Lower bound = NLL - glossy max (test), which stands for the paper's "
             f"bound over every prior; the bound over the {m}ing codes (NLL - their glossy max) holds only for "
             "priors on those codes, not every prior; nll_ba = "
             "NLL of the Blahut-Arimoto re-weighted prior fitted on the test images themselves (lower bound <= best "
             "prior <= nll_ba <= NLL); nll_ba_heldout = that prior on the training atoms fitted on the validation "
             "images and scored on the test images (achievable; may exceed NLL). With several training seeds a "
             "cell is mean ± sd over them (seeds: how many) and the intervals are left to the per-seed table "
             "(table1_seeds.csv); `within 2 sd` judges each paper difference against that sd alone (each seed "
             "was evaluated with its own draws, so it holds the Monte Carlo spread; ok: |ours - paper| <= 2 sd; blank "
             "with one seed). p: the two-sided p-value of the paper's number as one more run of ours (Student's t "
             "with seeds - 1 degrees of freedom on |ours - paper| / (sd sqrt(1 + 1/seeds)), sd as above); with "
             "three seeds the 2-sd rule says `differs` for 22.5% of runs drawn like ours, p < 0.05 for 5%. "
             "MC sd: the spread of nll, max and std over evaluation seeds of the same checkpoint "
             "(scripts/mc_spread.py).")
    df = df.reset_index(drop=True)
    repeats = df.groupby(["dataset", "model", "prior"], dropna=False)["model"].transform("size")
    labels, notes = [], []  # a row that shares its (dataset, model, prior) with another says which settings it holds
    for i, r in df.iterrows():
        label = ""
        if repeats[i] > 1 and pd.notna(r.get("run")):
            settings = r.get("settings")
            label = f" ({settings}, eval {r['eval_settings']})" if pd.notna(settings) and settings else f" ({r['run']})"
            notes.append(f"{r['dataset']} {r['model']} {r['prior']}{label}: {r['run']}")
        labels.append(label)
    table = markdown_grid(df.assign(_label=labels), _markdown_columns(m))
    lines = [intro, "", table]
    if notes:  # never averaged together silently: say which runs each separate row holds
        lines += ["", "Rows of one (dataset, model, prior) with other training or evaluation settings, kept apart:"]
        lines += [f"- {t}" for t in notes]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame) -> str:
    m = PAPER_MATCH
    pm = lambda c, d=2: lambda r: _pm(r, c, d).replace("±", "$\\pm$")  # noqa: E731
    columns = [("dataset", lambda r: r["dataset"]), ("model", lambda r: r["model"]), ("prior", lambda r: r["prior"]),
               ("NLL", pm("nll")), ("paper", lambda r: _fmt(r["nll_paper"])),
               ("max", pm(f"glossy_max_{m}", 1)), ("paper", lambda r: _fmt(r["glossy_max_paper"], 1)),
               ("std", pm(f"glossy_std_{m}", 1)), ("paper", lambda r: _fmt(r["glossy_std_paper"], 1)),
               ("max (test)", lambda r: _fmt(r["glossy_max"], 1)), ("std (test)", lambda r: _fmt(r["glossy_std"], 1)),
               ("lower bd.", lambda r: _fmt(r["lower_bound"])), ("held-out BA", lambda r: _fmt(r["nll_ba_heldout"]))]
    cells = _rendered(df, columns)
    body = (cells.style.hide(axis="index").format(escape="latex", subset=["dataset", "model", "prior"])
            .to_latex(hrules=True, column_format="lll rr rr rr rr rr"))
    head = [f"% Table 1 regenerated by glossy. Paper values: {PAPER_SOURCE}.",
            f"% max/std: candidates from the {m}ing images (the reading matching the paper); test: in-sample."]
    return "\n".join(head) + "\n" + body


def make_table(runs_root: str | Path, results_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    root = Path(runs_root)
    if not root.is_dir():
        raise GlossyError(f"runs_root={runs_root} is not a directory; train a model first (glossy train) "
                          f"or point runs_root at a folder of runs")
    results, problems = read_results(root)
    if not results:
        detail = ("; skipped: " + "; ".join(problems)) if problems else ""
        raise GlossyError(f"no complete result.json under {root}{detail}")
    per_seed = build_table(results)
    df = group_seeds(per_seed)
    out = Path(results_dir)
    atomic_write_text(out / "table1_seeds.csv", per_seed[per_seed["run"].notna()].to_csv(index=False))
    atomic_write_text(out / "table1.csv", df.to_csv(index=False))
    atomic_write_text(out / "table1.md", to_markdown(df))
    atomic_write_text(out / "table1.tex", to_latex(df))
    return df, problems
