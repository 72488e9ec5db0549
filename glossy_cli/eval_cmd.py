"""The evaluation stage, for `glossy train` (after its last epoch) and `glossy eval` alike:
checkpoint -> data -> evaluate -> points.pt + result.json."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from glossy import __version__
from glossy.atomic import atomic_torch_save, atomic_write_json, atomic_write_text, run_lock
from glossy.context import RunOptions
from glossy.errors import GlossyError
from glossy.evaluation import evaluate
from glossy.journal import ISJournal
from glossy.memory import check_budget
from glossy.settings import EvalSettings, candidate_list, heldout_samples

from .runs import (
    BEST,
    LAST,
    PARTIAL,
    POINTS,
    RESULT,
    find_checkpoint,
    load_data,
    model_from_checkpoint,
    read_checkpoint,
)

log = logging.getLogger("glossy")

SPLIT_KEYS = ("test", "val", "train")


def eval_config(cfg) -> dict:
    """The resolved eval.* settings as result.json records them (eval.candidates always a list)."""
    ecfg = OmegaConf.to_container(cfg.eval, resolve=True)
    ecfg["candidates"] = candidate_list(ecfg["candidates"])
    return ecfg


def _split(splits, name: str) -> torch.Tensor:
    return {"test": splits.test, "val": splits.val, "train": splits.train}[name]


def candidate_images(splits, seed: int) -> dict:
    """The images that candidates and the held-out fit come from: the training and validation splits,
    with a dynamically binarised training split binarised once (seeded), as the model sees binary data."""
    train_x = splits.train
    if splits.meta.dynamic_binarization:
        train_x = torch.bernoulli(train_x, generator=torch.Generator().manual_seed(seed))
    return {"train_x": train_x, "valid_x": splits.val}


def check_eval_budget(model, splits, cfg) -> None:
    """Fail now, not after hours of training, when eval.memory_budget_gb cannot hold the evaluation."""
    ecfg = eval_config(cfg)
    check_budget(model, len(_split(splits, ecfg["split"])), EvalSettings(**ecfg), n_train=len(splits.train),
                 n_valid=len(splits.val))


def training_record(state: dict) -> dict:
    """What result.json says of the training, from the state saved in last.pt."""
    return {"best_epoch": state["best_epoch"], "epochs_trained": state["epoch"], "stop_reason": state["stop_reason"],
            "best_val_loss": state["best_val"], "train_time_s": state["train_time_s"]}


def up_to_date(run_dir: Path, state: dict, ecfg: dict) -> dict | None:
    """The run's result.json when it already evaluates this run's final best checkpoint with this eval config."""
    try:
        record = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    same = (record.get("complete") and record.get("eval_config") == json.loads(json.dumps(ecfg))
            and record.get("best_epoch") == state["best_epoch"] and record.get("epochs_trained") == state["epoch"])
    return record if same else None


def evaluate_and_save(model, splits, cfg: DictConfig, run_dir: Path, device, extra: dict,
                      show_progress: bool | str = True) -> dict:
    """Evaluate `model` on the split that eval.split names; write points.pt and result.json atomically."""
    ecfg = eval_config(cfg)
    x = _split(splits, ecfg["split"])
    heldout = bool(ecfg["heldout"]) and ecfg["split"] == "test"
    if ecfg["heldout"] and not heldout:  # fitted on the validation images, so only a test score is held out
        log.info("eval.split=%s: the held-out sandwich is skipped (it is fitted on the validation images and "
                 "scored on the test images only)", ecfg["split"])
    keep: dict = {}
    journal = ISJournal(run_dir / PARTIAL)
    result = evaluate(model, x, EvalSettings(**{**ecfg, "heldout": heldout}), true_model=splits.meta.true_model,
                      run=RunOptions(device, show_progress, keep, journal),
                      **candidate_images(splits, int(ecfg["seed"])))
    # the per-point log p^(x_j), ELBO and per-candidate log c: what scripts/glossy_forensics.py starts from
    atomic_torch_save(run_dir / POINTS, {"eval_config": ecfg, "split": ecfg["split"],
                                         **{k: v.cpu() for k, v in keep.items()}})
    record = {
        "dataset": splits.meta.name, "model": cfg.model.name, "prior": cfg.prior.name,
        "seed": None if cfg.get("seed") is None else int(cfg.seed),
        "split": ecfg["split"], "run_dir": str(run_dir), **extra, **result, "eval_config": ecfg,
        "device": str(device), "versions": {"glossy": __version__, "torch": str(torch.__version__),
                                            "python": platform.python_version()},
        "stamp": stamp(result, ecfg),
        "written": _dt.datetime.now().isoformat(timespec="seconds"), "complete": True,
    }
    atomic_write_json(run_dir / RESULT, record)
    journal.discard()
    return record


def stamp(result: dict, ecfg: dict) -> dict:
    """What made a result's numbers: the code (glossy's version, the commit of the checkout it runs from where there
    is one) and, of what moves an estimate, the version of the evaluation's numerics, the Blahut-Arimoto solver
    and its stopping rule, the interval method and the held-out fit. `glossy table` averages seeds only where
    the parts of their stamps that move an estimate (`table.STAMP_ESTIMATES`) agree."""
    from glossy.evaluation import NUMERICS

    heldout = {"atoms": result["n_heldout_atoms"], "fit_images": result["n_heldout_fit"],
               "is_samples": heldout_samples(ecfg["is_samples"], ecfg.get("heldout_is_samples"))} \
        if "n_heldout_atoms" in result else None
    return {"glossy": __version__, "commit": _commit(), "numerics": NUMERICS,
            "solver": f"working set, sequential quadratic steps (Blahut-Arimoto, plain steps, active set where "
                      f"it does not fit); tol {ecfg['ba_tol']}, at most {ecfg['ba_iters']} passes",
            "interval_method": result.get("interval_method"), "heldout": heldout}


def _commit() -> str | None:
    """The git commit of the checkout glossy runs from (`+` when it has changes), None outside one."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def evaluate_checkpoint(cfg, device, show_progress: bool | str = True) -> dict:
    """`glossy eval`: the checkpoint that cfg.checkpoint names (a run directory or a .pt file), with the
    training's own config except for eval.*, device, data_dir and download, into its run's result.json; or a
    model trained elsewhere (`evaluate_outside`)."""
    from glossy.adapters import is_pythae_folder

    if cfg.get("factory") or is_pythae_folder(cfg.checkpoint):
        return evaluate_outside(cfg, device, show_progress)
    if cfg.get("dataset") is not None:
        raise GlossyError(f"dataset={cfg.dataset.name}: a glossy run is evaluated on the data it was trained on; "
                          f"dataset= is for a model trained elsewhere (a pythae model folder, or factory=)")
    path = find_checkpoint(cfg.checkpoint)
    ckpt = read_checkpoint(path)
    tcfg = OmegaConf.create(ckpt["config"])
    for key in ("eval", "device", "data_dir", "download"):
        tcfg[key] = cfg[key]
    splits = load_data(tcfg)
    model = model_from_checkpoint(ckpt, path, splits.meta).to(device)
    extra = {"checkpoint": str(path), "best_epoch": ckpt.get("epoch")}
    last = path.parent / LAST
    if path.name == BEST and last.is_file():  # a run's best checkpoint: keep what result.json says of its training
        state = read_checkpoint(last)["state"]
        if state["best_epoch"] == ckpt.get("epoch"):
            extra = {**training_record(state), **extra}
    with run_lock(path.parent):
        return evaluate_and_save(model, splits, tcfg, path.parent, device, extra, show_progress=show_progress)


def evaluate_outside(cfg, device, show_progress: bool | str = True) -> dict:
    """`glossy eval` of a model trained elsewhere: a pythae model folder (checkpoint=<folder>), or the model a
    factory returns with its weights (factory=package.module:function checkpoint=<weights file>), on
    dataset=<name>, into a run directory under runs_root (hydra's run dir: runs.outside_run_name)."""
    from hydra.core.hydra_config import HydraConfig

    from .runs import holds_a_run, remove_unstarted_run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = not holds_a_run(run_dir)
    try:
        model, splits, tcfg, source = _outside_model(cfg)
    except GlossyError:
        if fresh:  # refused before any work: leave no run directory behind
            remove_unstarted_run(run_dir)
        raise
    with run_lock(run_dir):
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        return evaluate_and_save(model.to(device), splits, tcfg, run_dir, device, {"source": source},
                                 show_progress=show_progress)


def _outside_model(cfg):
    """(the adapted model, its data, the config evaluate_and_save reads, what result.json says of its source)."""
    from glossy.adapters import from_factory, load_pythae

    if cfg.get("dataset") is None:
        raise GlossyError(f"checkpoint={cfg.checkpoint} is a model trained elsewhere: name the data to evaluate it "
                          f"on with dataset=<name> (glossy data lists them)")
    if cfg.get("factory"):
        model = from_factory(cfg.factory, cfg.checkpoint)
        source = {"library": "factory", "factory": cfg.factory, "weights": str(Path(cfg.checkpoint).resolve())}
        name, prior = "factory-" + cfg.factory.rsplit(":", 1)[-1], "own"
    else:
        model = load_pythae(cfg.checkpoint, trust_pickles=bool(cfg.trust_pickles))
        source = {**model.describe(), "folder": str(Path(cfg.checkpoint).expanduser().resolve())}
        name, prior = f"pythae-{model.kind.lower()}", model.prior_name
    splits = load_data(cfg)
    fit_to_data(model, splits.meta, str(cfg.checkpoint))
    tcfg = OmegaConf.create({"eval": OmegaConf.to_container(cfg.eval, resolve=True), "model": {"name": name},
                             "prior": {"name": prior}, "seed": None})
    return model, splits, tcfg, source


def fit_to_data(model, meta, what: str) -> None:
    """One GlossyError where the model cannot score this dataset's images: another number of pixels, or a
    Bernoulli likelihood (a density over binary images only) on images that are not binary. A model whose images
    are the same pixels in another shape ((784,) for (1, 28, 28)) takes the dataset's shape."""
    import math

    shape = tuple(int(d) for d in model.input_shape)
    if math.prod(shape) != math.prod(meta.shape):
        raise GlossyError(f"{what} takes images of shape {list(shape)} ({math.prod(shape)} values), but dataset "
                          f"{meta.name} has images of shape {list(meta.shape)} ({math.prod(meta.shape)} values)")
    if getattr(model, "input_type", None) == "binary" and meta.input_type != "binary":
        raise GlossyError(f"{what} has a Bernoulli likelihood, a density over binary images, but dataset {meta.name} "
                          f"has {meta.input_type} images")
    model.input_shape = tuple(meta.shape)
