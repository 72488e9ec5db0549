"""`glossy data`: report every dataset honestly, or fetch one ahead of a job.

glossy data [list] [dataset=<name>] [data_dir=...]   (no dataset: every dataset)
    one line per dataset: status (ok = present and verified / missing / corrupt / error), split
    sizes, how its files were verified, and where they live; below, what is missing or wrong and how to
    fix it. Never downloads anything, never builds a split (no torch); always exits 0 when it could look.
    A file's digest is computed when it is first listed and again whenever its size, mtime or inode
    change (recheck=true: hash every file again); a run always hashes its files afresh.
glossy data fetch [dataset=<name>] [data_dir=...] [download=true]   (no dataset: every dataset)
    download the dataset's missing files (verified, atomically), parse them once (this also builds the
    parse caches) and print the split sizes; exits non-zero with one clear message when it cannot.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from glossy.errors import GlossyError
from glossy_datasets import registry as datasets
from glossy_datasets.download import DatasetCorrupt, DatasetMissing, DigestCache, resolve_data_dir

from .schema import dataset_options

ACTIONS = ("list", "fetch")


def _selection(cfg: DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """[(name, options)]: the one chosen with dataset=<name> (its conf group, overrides applied), else all."""
    ds = cfg.get("dataset")
    if ds is None:
        # every dataset but `file`, which is one only with its path (dataset=file dataset.options.path=...)
        return [(n, dataset_options(n)) for n in datasets.DATASETS if n != "file"]
    if not isinstance(ds, DictConfig) or "name" not in ds:
        raise GlossyError(f"dataset={ds!r}: pick one of {', '.join(datasets.DATASETS)}, or leave dataset "
                          f"out for all of them")
    name = str(ds.name)
    if name not in datasets.DATASETS:
        raise GlossyError(f"unknown dataset {name!r}; valid: {', '.join(datasets.DATASETS)}")
    opts = ds.get("options") or {}
    opts = OmegaConf.to_container(opts, resolve=True) if isinstance(opts, DictConfig) else dict(opts)
    return [(name, opts)]


def dataset_status(name: str, data_dir: Path, options: dict[str, Any] | None = None,
                   digests: DigestCache | None = None) -> dict[str, Any]:
    """Verify a dataset without downloading or building it; classify the outcome. Never raises for a
    dataset's problem."""
    row: dict[str, Any] = {"dataset": name, "location": str(data_dir / name), "sizes": None, "verified": "",
                           "detail": ""}
    if name == "synthetic":
        options = {**dataset_options("synthetic"), **(options or {})}
    try:
        found = datasets.verify(name, data_dir, digests, **(options or {}))
    except DatasetMissing as e:
        row.update(status="missing", detail=str(e))
        return row
    except DatasetCorrupt as e:
        row.update(status="corrupt", detail=str(e))
        return row
    except datasets.DatasetError as e:
        row.update(status="error", detail=str(e))
        return row
    if not found.files:  # generated on demand from its options: nothing to verify
        row.update(location="(generated, no files)", status="generated", verified="-", files=[], sizes=found.sizes)
        return row
    row.update(status="ok", sizes=found.sizes, verified=found.verified_by or "-", files=sorted(found.files))
    return row


def format_rows(rows: list[dict[str, Any]], data_dir: Path) -> str:
    head = ("dataset", "status", "train", "val", "test", "verified by", "location")
    table = [head]
    for r in rows:
        s = r["sizes"] or {}
        table.append((r["dataset"], r["status"], *(str(s.get(k, "-")) for k in ("train", "val", "test")),
                      r["verified"] or "-", r["location"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [f"data_dir: {data_dir}"]
    for row in table:
        cells = [c.rjust(w) if 2 <= i <= 4 else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    notes = [f"  {r['dataset']} ({r['status']}): {r['detail']}" for r in rows if r["detail"]]
    if notes:
        lines += ["", "what is missing or wrong:", *notes]
    return "\n".join(lines)


def fetch(name: str, data_dir: Path, download: bool, options: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        splits = datasets.load(name, data_dir, download=download, **(options or {}))
    except datasets.DatasetError as e:
        raise GlossyError(str(e)) from e
    sizes = splits.sizes()
    where = "(generated, no files)" if name == "synthetic" else str(data_dir / name)
    print(f"{name}: ok  train {sizes['train']}  val {sizes['val']}  test {sizes['test']}  {where}")
    return {"dataset": name, "status": "ok", "sizes": sizes, "location": where}


def data_task(cfg: DictConfig) -> list[dict[str, Any]]:
    action = str(cfg.get("action", "list"))
    if action not in ACTIONS:
        raise GlossyError(f"action={action!r} is not one of {', '.join(ACTIONS)} (glossy data list | "
                          f"glossy data fetch dataset=<name>)")
    chosen = _selection(cfg)
    data_dir = resolve_data_dir(cfg.get("data_dir"))
    if action == "list":
        digests = DigestCache()
        if bool(cfg.get("recheck", False)):
            digests.entries.clear()
        rows = [dataset_status(n, data_dir, o, digests) for n, o in chosen]
        digests.save()
        print(format_rows(rows, data_dir))
        return rows
    out, failures = [], []
    for n, o in chosen:
        try:
            out.append(fetch(n, data_dir, bool(cfg.get("download", True)), o))
        except GlossyError as e:
            if len(chosen) == 1:
                raise
            print(f"glossy: error: {e}", file=sys.stderr)
            failures.append(n)
    if failures:
        raise GlossyError(f"could not fetch {len(failures)} of {len(chosen)} datasets: {', '.join(failures)} "
                          f"(see the messages above)")
    return out
