"""The README's "Table 1 as it stands", made from results/table1.csv (what `glossy table` wrote), so that it
cannot drift from the results: each filled row, mean ± sd over its training seeds where it has several.

    python scripts/readme_table.py [results/table1.csv]            # prints the markdown table
    python scripts/readme_table.py --write [results/table1.csv]    # puts it into README.md

tests/test_readme.py checks that README.md holds exactly this output.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from glossy_cli.table import _fmt, _p_cell, _pm, _rendered, _verdicts

NAMES = {"mnist": "Static MNIST", "omniglot": "OMNIGLOT", "caltech101": "Caltech 101", "frey": "Frey Faces",
         "histopathology": "Histopathology", "cifar10": "CIFAR-10"}
MODELS = {"vae": "VAE", "hvae": "HVAE", "pixelhvae": "PixelHVAE"}
PRIORS = {"standard": "standard", "vamp": "VampPrior"}
# the reference splits' training images (docs/results.md): a row whose glossy matrix used fewer training
# candidates says so in its settings cell
TRAIN_IMAGES = {"mnist": 50000, "omniglot": 23000, "caltech101": 4100, "frey": 1565, "histopathology": 6800,
                "cifar10": 40000}


def _settings(r: dict) -> str:
    """The row's settings: the reference's (S = 5000 on every test image, every training image a candidate)
    or what differs from them."""
    got = []
    if int(r["is_samples"]) != 5000:
        got.append(f"S = {int(r['is_samples'])}")
    m, n = r.get("n_candidates_train"), TRAIN_IMAGES[r["dataset"]]
    if m is not None and m == m and int(m) < n:
        got.append(f"{int(m)} of {n} training candidates")
    return "reference" + "".join(f", {g}" for g in got)


def readme_table(csv: Path) -> str:
    df = pd.read_csv(csv)
    df = df[(df["n_seeds"] > 0) & df["dataset"].isin(list(NAMES))].reset_index(drop=True)
    firsts = set(df.drop_duplicates("dataset").index)
    df["_first"] = [i in firsts for i in df.index]
    columns = [
        ("data (test N)", lambda r: f"{NAMES[r['dataset']]} ({int(r['n_points'])})" if r["_first"] else ""),
        ("model", lambda r: MODELS[r["model"]]), ("prior", lambda r: PRIORS[r["prior"]]),
        ("seeds", lambda r: str(int(r["n_seeds"]))), ("settings", _settings),
        ("NLL here", lambda r: _pm(r, "nll")), ("paper", lambda r: _fmt(r["nll_paper"])),
        ("within 2 sd of the paper", lambda r: _verdicts(r) or "one seed"),
        ("p (nll, max, std)", _p_cell),
        ("glossy max: train / test / paper",
         lambda r: f"{_pm(r, 'glossy_max_train', 1)} / {_pm(r, 'glossy_max', 1)} / {_fmt(r['glossy_max_paper'], 1)}"),
        ("glossy std: train / paper", lambda r: f"{_pm(r, 'glossy_std_train', 1)} / {_fmt(r['glossy_std_paper'], 1)}"),
        ("nll_ba_heldout - NLL", lambda r: f"{r['nll_ba_heldout'] - r['nll']:+.2f}"),
    ]
    cells = _rendered(df, columns)
    lines = [list(cells.columns), ["---"] * len(cells.columns), *cells.values.tolist()]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)  # unpadded: the README's bytes are few


BLOCK = re.compile(r"(<!-- readme_table -->\n).*?(\n<!-- /readme_table -->)", re.S)


def write_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"{readme}: no <!-- readme_table --> ... <!-- /readme_table --> block to fill")
    readme.write_text(BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", nargs="?", default="results/table1.csv", help="the Table-1 csv (default: %(default)s)")
    ap.add_argument("--write", action="store_true", help="fill README.md's readme_table block instead of printing")
    args = ap.parse_args(argv)
    table = readme_table(Path(args.table))
    if args.write:
        write_readme(Path(__file__).resolve().parents[1] / "README.md", table)
    else:
        print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
