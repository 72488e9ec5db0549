"""Run directories, devices, self-describing checkpoints and the model/dataset factories from config."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from glossy import __version__
from glossy.errors import GlossyError
from glossy_datasets import registry as datasets
from glossy_models import registry as models

from .schema import library_default

if TYPE_CHECKING:
    import torch

log = logging.getLogger("glossy")

CHECKPOINT_FORMAT = "glossy-checkpoint"
CHECKPOINT_VERSION = 1
BEST, LAST, RESULT = "best.pt", "last.pt", "result.json"
POINTS = "points.pt"  # per-point log p^(x_j), ELBO and per-candidate log c of the last evaluation
PARTIAL = "eval_partial.pt"  # an unfinished evaluation's importance-sampled points (removed when it finishes)

# overrides that do not change what is trained, so they do not change the run directory
_NAME_EXCLUDE = ("dataset", "model", "prior", "seed", "device", "runs_root", "results_dir", "data_dir",
                 "download", "hydra.", "hydra/", "eval.", "train.trajectory_", "train.grid", "experiment", "logger",
                 "logger.")


def _excluded(key: str) -> bool:
    return any(key == e or (e.endswith((".", "_")) and key.startswith(e)) for e in _NAME_EXCLUDE)


def run_name(dataset: str, model: str, prior: str, seed: Any, overrides: list[str]) -> str:
    """<dataset>-<model>-<prior>-seed<seed>[__<other overrides>_<hash>]: a function of the config.
    Only characters that Hydra's override grammar takes unquoted, so `checkpoint=<run dir>` works."""
    names = {"dataset": str(dataset), "model": str(model), "prior": str(prior)}

    def kept(o: str) -> bool:
        key, _, value = o.lstrip("+~").partition("=")
        if key in names:  # a group option named after what it selects is in the name already; another
            return value != names[key]  # file (model=vae_big with name: vae) makes a run of its own
        return not _excluded(key)

    keep = sorted(o for o in overrides if kept(o))
    name = f"{dataset}-{model}-{prior}-seed{seed}"
    if keep:
        readable = re.sub(r"[^A-Za-z0-9._+-]", "_", "__".join(keep).replace("=", "-"))[:60]
        name += f"__{readable}_{hashlib.sha1(','.join(keep).encode()).hexdigest()[:8]}"
    return name


# settings that only let a training go on for longer: changing them resumes the same run instead of starting one
EXTENDS = ("train.epochs", "train.early_stopping")
_IDENTITY_CACHE: dict[tuple, list[str]] = {}


def _flat(d: dict, prefix: str) -> dict[str, Any]:
    """{"a.b.c": value} of a nested dict under `prefix`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}") if isinstance(v, dict) else {f"{prefix}.{k}": v})
    return out


def effective_overrides(overrides: list[str], searchpath: list[str] = ()) -> list[str]:
    """The overrides that make the run what it is: group choices as written (train=quick), and for the value
    overrides the settings whose resolved value differs from that of the same group choices without them, as
    key=value (so `train.lr=5e-4`, the default, and `train.lr=0.0005` make no run of their own and `1e-3` and
    `0.001` the same one). Settings that only extend a training (EXTENDS) and the excluded ones leave it out.
    searchpath: the application's hydra.searchpath (a user's own config folders), searched as it searches them."""
    key_of = lambda o: o.lstrip("+~").partition("=")[0]  # noqa: E731
    groups = [o for o in overrides if "." not in key_of(o) and "/" not in key_of(o)]
    values = [o for o in overrides if o not in groups and not _excluded(key_of(o)) and key_of(o) not in EXTENDS]
    if not values:
        return groups
    cache_key = (tuple(overrides), tuple(searchpath))
    if cache_key not in _IDENTITY_CACHE:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.utils import create_config_search_path
        from hydra.types import RunMode

        from .schema import CONF_DIR, register

        register()  # the schemas the YAML files extend (idempotent)

        # composed apart from the running application (GlobalHydra is left as it is)
        path = create_config_search_path(str(CONF_DIR))
        for entry in searchpath:
            path.append(provider="searchpath", path=str(entry), anchor="main")  # as Hydra places them
        loader = ConfigLoaderImpl(config_search_path=path)
        base, full = (loader.load_configuration(config_name="train", overrides=o, run_mode=RunMode.RUN)
                      for o in (groups, [*groups, *values]))
        diff = []
        for top in ("train", "model", "prior", "dataset"):
            b, f = (_flat(OmegaConf.to_container(c[top], resolve=True) or {}, top) for c in (base, full))
            diff += [f"{k}={f[k]}" for k in sorted(f) if (k not in b or b[k] != f[k]) and not _excluded(k)
                     and k not in EXTENDS]
        _IDENTITY_CACHE[cache_key] = diff
    return [*groups, *_IDENTITY_CACHE[cache_key]]


def _resolve_run_name(dataset: str, model: str, prior: str, seed: Any) -> str:
    """The run directory's name from the composed config's identity (dataset.name, model.name, prior.name,
    seed: wherever they were set) and the settings that change what is trained (`effective_overrides`)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return run_name(dataset, model, prior, seed, effective_overrides(list(hc.overrides.task), list(hc.searchpath)))


def _resolve_eval_dir(checkpoint: str, runs_root: str = "runs", dataset: str = "", factory: str = "") -> str:
    """Where `glossy eval` writes: a glossy run's own directory; for a model trained elsewhere (a pythae folder,
    or a factory's weights) a directory under runs_root named after it, never the user's model folder."""
    p = Path(str(checkpoint)).expanduser()
    dataset, factory = ("" if v is None else str(v) for v in (dataset, factory))  # oc.select's None
    from glossy.adapters import is_pythae_folder

    if factory or is_pythae_folder(p):
        return str(Path(str(runs_root)) / outside_run_name(p, str(dataset), str(factory)))
    return str(p.parent if p.suffix == ".pt" else p)


def outside_run_name(path: Path, dataset: str, factory: str = "") -> str:
    """<source>-<model's name>-<dataset>-<hash of where it came from>: the same model and data, the same directory
    (so that a cut-off evaluation resumes); two folders of one name stay apart."""
    source = "factory-" + factory.rsplit(":", 1)[-1] if factory else "pythae"
    where = f"{factory}|{path.resolve()}"
    digest = hashlib.sha1(where.encode()).hexdigest()[:6]
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", path.stem if path.suffix == ".pt" else path.name) or "model"
    return f"{source}-{name}-{dataset or 'nodata'}-{digest}"


def default_data_dir() -> str:
    """$GLOSSY_DATA_DIR if set, else <user cache dir>/glossy/data (the datasets package decides)."""
    from glossy_datasets.download import default_data_dir as _default

    return str(_default())


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("glossy_default_data_dir"):
        OmegaConf.register_new_resolver("glossy_default_data_dir", default_data_dir)
    if not OmegaConf.has_resolver("glossy_run_name"):
        OmegaConf.register_new_resolver("glossy_run_name", _resolve_run_name)
    if not OmegaConf.has_resolver("glossy_eval_dir"):
        OmegaConf.register_new_resolver("glossy_eval_dir", _resolve_eval_dir)


def resolve_device(spec: str) -> torch.device:
    import torch
    spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise GlossyError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GlossyError(f"device={spec!r} was asked for but CUDA is not available here; use device=auto")
    return dev


def model_args(cfg: DictConfig, meta: datasets.DatasetMeta) -> dict[str, Any]:
    """Everything `models.build` needs, from the config and the dataset's metadata."""
    p = cfg.prior
    return {
        "model": cfg.model.name, "prior": p.name, "input_shape": list(meta.shape), "input_type": meta.input_type,
        "z_dim": int(cfg.model.z_dim), "hidden": int(cfg.model.hidden),
        "n_components": int(p.n_components) if "n_components" in p else N_COMPONENTS,
        "pseudo_init_mean": float(p.init_mean if p.get("init_mean") is not None else meta.pseudo_init_mean),
        "pseudo_init_std": float(p.init_std if p.get("init_std") is not None else meta.pseudo_init_std),
        **{k: int(cfg.model[k]) for k in models.ARCHITECTURE_KEYS.get(cfg.model.name, ()) if k in cfg.model},
    }


N_COMPONENTS = models.PRIOR_DEFAULTS["n_components"]  # unused by a standard prior


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two model_args describe the same model (a key that an older glossy did not record counts
    as its constructor's default, so runs trained before a hyper-parameter became a key still resume)."""
    def filled(m):
        m = dict(m)
        cls = models.MODELS.get(m.get("model"))
        for k in models.ARCHITECTURE_KEYS.get(m.get("model"), ()):
            m.setdefault(k, library_default(cls.__init__, k))
        return m

    return filled(a) == filled(b)


def build_model(args: dict[str, Any]) -> models.LatentVariableModel:
    a = dict(args)
    return models.build(a.pop("model"), a.pop("prior"), a.pop("input_shape"), a.pop("input_type"), **a)


def load_data(cfg: DictConfig) -> datasets.Splits:
    node = cfg.dataset.get("options")
    opts = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    try:
        return datasets.load(cfg.dataset.name, cfg.data_dir, download=bool(cfg.get("download", True)), **opts)
    except datasets.DatasetError as e:
        raise GlossyError(str(e)) from e


def checkpoint_payload(kind: str, cfg: DictConfig, margs: dict, model: torch.nn.Module, **extra) -> dict:
    import torch
    return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "kind": kind,
            "glossy_version": __version__, "torch_version": str(torch.__version__),
            "config": OmegaConf.to_container(cfg, resolve=True), "model_args": margs,
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}


def _describe(e: BaseException) -> str:
    """'Type: first line of the message' (at most 200 characters of it), or 'Type' for an empty message."""
    first = (str(e).splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint file; any problem becomes one clear GlossyError."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise GlossyError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or corrupt file
        raise GlossyError(f"{path} is not a readable glossy checkpoint ({_describe(e)}); "
                          f"it may be truncated or not written by glossy") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise GlossyError(f"{path} is not a glossy checkpoint (no glossy format marker)")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise GlossyError(f"{path} was written by glossy {ckpt.get('glossy_version')} in checkpoint format "
                          f"{ckpt.get('format_version')}; this glossy ({__version__}) reads format "
                          f"{CHECKPOINT_VERSION} only")
    return ckpt


def find_checkpoint(spec: str) -> Path:
    """A run directory (its best.pt) or a checkpoint file."""
    p = Path(str(spec)).expanduser()
    if p.is_dir():
        if (p / BEST).is_file():
            return p / BEST
        raise GlossyError(f"run directory {p} holds no {BEST}; has its training finished an epoch?")
    if not p.exists():
        raise GlossyError(f"checkpoint={spec}: no such file or directory")
    return p


def model_from_checkpoint(ckpt: dict, path: Path, meta: datasets.DatasetMeta | None = None):
    margs = ckpt["model_args"]
    if meta is not None and (list(meta.shape) != list(margs["input_shape"]) or meta.input_type != margs["input_type"]):
        raise GlossyError(f"{path} was trained on {margs['input_type']} images of shape {margs['input_shape']}, "
                          f"but dataset {meta.name} has {meta.input_type} images of shape {list(meta.shape)}")
    try:
        model = build_model(margs)
        model.load_state_dict(ckpt["model_state"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise GlossyError(f"{path} does not fit this glossy's {margs.get('model')} model "
                          f"({_describe(e)})") from e
    return model


def load_trained(spec: str | Path, data_dir: str | None = None) -> tuple[DictConfig, datasets.Splits, Any]:
    """A trained run (its directory or a checkpoint file) as (its training config, its data, the model):
    what the measurement scripts start from. data_dir: where the data are, if not where it was trained."""
    path = find_checkpoint(str(spec))
    ckpt = read_checkpoint(path)
    cfg = OmegaConf.create(ckpt["config"])
    if data_dir:
        cfg.data_dir = data_dir
    splits = load_data(cfg)
    return cfg, splits, model_from_checkpoint(ckpt, path, splits.meta)


# what Hydra and the run lock put into a run directory before glossy writes anything of its own
_HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".hydra", "train.log", "eval.log",
                ".lock")


def holds_a_run(run_dir: Path) -> bool:
    """Whether glossy has written anything of a run into run_dir (a state, a checkpoint, a result, its config)."""
    return any((run_dir / f).exists() for f in (LAST, BEST, RESULT, "config.yaml"))


def remove_unstarted_run(run_dir: Path) -> None:
    """Remove a run directory that holds only what Hydra wrote for this command; anything else stays."""
    if holds_a_run(run_dir):
        return
    for name in _HYDRA_FILES:
        p = run_dir / name
        try:
            p.rmdir() if p.is_dir() else p.unlink(missing_ok=True)
        except OSError:  # not empty (not only Hydra's) or already gone: leave it
            pass
    try:
        run_dir.rmdir()
    except OSError:
        pass
