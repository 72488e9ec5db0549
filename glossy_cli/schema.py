"""The typed schema of every command's configuration, registered in Hydra's ConfigStore.

The YAML files under conf/ extend these dataclasses (`defaults: [<schema>, _self_]`), so OmegaConf
enforces each field's type while Hydra composes the config, and `check(cfg)` (OmegaConf.to_object,
which runs each dataclass's __post_init__) enforces the ranges and cross-field rules written next to
the fields below. Every default exists once: the model and dataset defaults are read from the library
functions' signatures (`models.build`, `PixelHVAE`, each dataset's `load`), the rest are set here and
only overridden by the presets in conf/ (train=quick). `glossy train --cfg job` prints the result.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from glossy.errors import ConfigError
from glossy.settings import EvalSettings, at_least, positive
from glossy_datasets import registry as datasets
from glossy_models import registry as models


def library_default(fn, name: str):
    """The default of keyword `name` in `fn`'s signature: the library is where the default lives."""
    return inspect.signature(fn).parameters[name].default






# ----------------------------------------------------------------------------------------------- datasets


@dataclass
class DatasetConfig:
    name: str = MISSING
    options: Any = field(default_factory=dict)


DATASET_OPTIONS = datasets.OPTIONS  # each loader's options dataclass, beside its loader (glossy_datasets/<name>.py)


def dataset_options(name: str) -> dict[str, Any]:
    """The default options of dataset `name`, as `glossy train dataset=<name>` uses them."""
    return OmegaConf.to_container(OmegaConf.structured(DATASET_OPTIONS[name]))


# ----------------------------------------------------------------------------------------- models, priors


@dataclass
class ModelConfig:
    name: str = MISSING
    z_dim: int = library_default(models.build, "z_dim")
    hidden: int = library_default(models.build, "hidden")

    def __post_init__(self):
        if self.name not in models.MODEL_NAMES:
            raise ConfigError(f"model.name={self.name}: must be one of {', '.join(models.MODEL_NAMES)}")
        at_least(self, "model", 1, "z_dim", "hidden")


@dataclass
class PixelHVAEConfig(ModelConfig):
    name: str = "pixelhvae"
    channels: int = models.PIXELCNN_DEFAULTS["channels"]
    n_layers: int = models.PIXELCNN_DEFAULTS["n_layers"]

    def __post_init__(self):
        super().__post_init__()
        at_least(self, "model", 1, "channels", "n_layers")


@dataclass
class PriorConfig:
    name: str = MISSING

    def __post_init__(self):
        if self.name not in models.PRIOR_NAMES:
            raise ConfigError(f"prior.name={self.name}: must be one of {', '.join(models.PRIOR_NAMES)}")


@dataclass
class VampPriorConfig(PriorConfig):
    name: str = "vamp"
    n_components: int = models.PRIOR_DEFAULTS["n_components"]
    init_mean: float | None = None  # null: the dataset's own initialisation (DatasetMeta)
    init_std: float | None = None

    def __post_init__(self):
        super().__post_init__()
        at_least(self, "prior", 1, "n_components")
        if self.init_std is not None and not (self.init_std >= 0 and math.isfinite(self.init_std)):
            raise ConfigError(f"prior.init_std={self.init_std}: must be at least 0 (or null)")
        if self.init_mean is not None and not math.isfinite(self.init_mean):
            raise ConfigError(f"prior.init_mean={self.init_mean}: must be a finite number (or null)")


# ------------------------------------------------------------------------------------------- train, eval


@dataclass
class TrainSettings:
    epochs: int = 2000  # at most
    batch_size: int = 100
    lr: float = 5.0e-4  # Adam
    warmup: int = 100  # linear KL warm-up epochs (beta = epoch / warmup, capped at 1)
    early_stopping: int = 50  # epochs without a better validation loss (counter frozen during warm-up)
    val_batch_size: int = 1000
    batches_per_epoch: int | None = None  # null: the whole training split every epoch
    val_points: int | None = None  # null: the whole validation split
    trajectory_every: int = 10  # every k epochs: NLL, glossy statistics, bounds on a test subset (0: off)
    trajectory_points: int = 1000
    trajectory_samples: int = 100
    grid: int = 64  # images in the sample and reconstruction grids
    compile: bool = False  # torch.compile the training step

    def __post_init__(self):
        at_least(self, "train", 1, "epochs", "batch_size", "val_batch_size", "early_stopping",
                  "trajectory_points", "trajectory_samples")
        at_least(self, "train", 0, "warmup", "trajectory_every", "grid")
        at_least(self, "train", 1, "batches_per_epoch", "val_points", optional=True)
        positive(self, "train", "lr")
        if self.warmup > self.epochs:
            raise ConfigError(f"train.warmup={self.warmup}: must be at most train.epochs={self.epochs} (the KL "
                              f"weight would never reach 1)")




# ------------------------------------------------------------------------------------------------ commands

DATA_DIR = "${glossy_default_data_dir:}"  # $GLOSSY_DATA_DIR, else ~/.cache/glossy/data


def _check_device(spec: str) -> None:
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise ConfigError(f"device={spec}: must be auto, cpu, cuda or cuda:N")


@dataclass
class LoggerConfig:
    name: str = "csv"  # csv | none | tensorboard | mlflow (glossy_cli/loggers.py)
    tracking_uri: str | None = None  # mlflow only; null: <run>/mlruns

    def __post_init__(self):
        from .loggers import LOGGERS

        if self.name not in LOGGERS:
            raise ConfigError(f"logger.name={self.name}: must be one of {', '.join(LOGGERS)}")


@dataclass
class TrainCommand:
    dataset: Any = MISSING
    model: Any = MISSING
    prior: Any = MISSING
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # where the training curves go besides the files
    seed: int = 0  # model initialisation, minibatch order, sampling
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch deterministic algorithms (bit-identical resumes on one machine)
    data_dir: str = DATA_DIR
    download: bool = True  # fetch missing dataset files from their canonical address
    runs_root: str = "runs"  # runs go to <runs_root>/<dataset>-<model>-<prior>-seed<seed>[__<overrides>]
    results_dir: str = "results"

    def __post_init__(self):
        _check_device(self.device)
        at_least(self, "", 0, "seed")


@dataclass
class EvalCommand:
    # a glossy run (its directory or a .pt file), a pythae model folder, or with `factory` a weights file
    checkpoint: str = MISSING
    eval: EvalSettings = field(default_factory=EvalSettings)
    # a model trained elsewhere is evaluated on dataset=<name> (a glossy run's dataset is its own)
    dataset: Any = None
    factory: str | None = None  # package.module:function returning a glossy.LatentVariableModel (or a pythae model)
    trust_pickles: bool = False  # load a pythae folder's custom networks (pickles, which run code when loaded)
    device: str = "auto"
    data_dir: str = DATA_DIR
    download: bool = True
    runs_root: str = "runs"  # a model trained elsewhere is evaluated into <runs_root>/<its name>-<dataset>-<hash>

    def __post_init__(self):
        _check_device(self.device)
        if self.factory is not None and ":" not in self.factory:
            raise ConfigError(f"factory={self.factory}: expected package.module:function")


@dataclass
class TableCommand:
    runs_root: str = "runs"
    results_dir: str = "results"


@dataclass
class FigureCommand:
    checkpoint: str = MISSING
    out: str | None = None


@dataclass
class DataCommand:
    dataset: Any = None  # none: every dataset
    action: str = "list"  # list | fetch
    data_dir: str = DATA_DIR
    download: bool = True  # fetch: download missing files from their canonical address
    recheck: bool = False  # list: hash every file again (else a file unchanged since it was last listed is not)

    def __post_init__(self):
        if self.action not in ("list", "fetch"):
            raise ConfigError(f"action={self.action}: must be list or fetch")


COMMANDS: dict[str, type] = {"train": TrainCommand, "eval": EvalCommand, "table": TableCommand,
                             "figure": FigureCommand, "data": DataCommand}


# the YAML files: conf/ beside glossy_cli/ in a checkout (an editable install too), glossy_cli/conf in a wheel
CONF_DIR = next((d for d in (Path(__file__).parent / "conf", Path(__file__).parent.parent / "conf") if d.is_dir()),
                Path(__file__).parent.parent / "conf")
SCHEMA_GROUP = "schema"  # conf/<group>/<name>.yaml extend /schema/<group>_<name>@_here_


def register() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent); conf/*.yaml name them in their defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for cmd, node in COMMANDS.items():
        cs.store(group=SCHEMA_GROUP, name=cmd, node=node)
    for name, opts in DATASET_OPTIONS.items():
        cs.store(group=SCHEMA_GROUP, name=f"dataset_{name}", node=DatasetConfig(name=name, options=opts()))
    for name in models.MODEL_NAMES:
        node = PixelHVAEConfig() if name == "pixelhvae" else ModelConfig(name=name)
        cs.store(group=SCHEMA_GROUP, name=f"model_{name}", node=node)
    cs.store(group=SCHEMA_GROUP, name="prior_standard", node=PriorConfig(name="standard"))
    cs.store(group=SCHEMA_GROUP, name="prior_vamp", node=VampPriorConfig())
    cs.store(group=SCHEMA_GROUP, name="train_settings", node=TrainSettings)
    for name in ("csv", "none", "tensorboard", "mlflow"):
        cs.store(group=SCHEMA_GROUP, name=f"logger_{name}", node=LoggerConfig(name=name))
    cs.store(group=SCHEMA_GROUP, name="eval_settings", node=EvalSettings)


def _unknown_key(node, prefix: str = "") -> tuple[str, list[str]] | None:
    """The first key under a schema node that its dataclass lacks (`+key=value` can add one), with the
    keys it has."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return None
    kind = OmegaConf.get_type(node)
    names = {f.name for f in fields(kind)} if kind is not None and hasattr(kind, "__dataclass_fields__") else None
    for k in node.keys():
        path = f"{prefix}{k}"
        if names is not None and k not in names:
            return path, [f.name for f in fields(kind)]
        child = node._get_node(k)
        if isinstance(child, DictConfig) and (found := _unknown_key(child, path + ".")):
            return found
    return None


def not_a_setting(key: str, valid=None, detail: str = "") -> str:
    """The one line for a key the schema does not have, with the keys it does have where known."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    text = f"{key} is not a setting" + (f" of {parent}" if parent else "")
    return text + (f"; valid: {', '.join(map(str, valid))}" if valid else f": {detail}" if detail else "")


def root_cause(e: BaseException) -> BaseException:
    """The OmegaConf error behind a Hydra/OmegaConf exception chain (else the last cause)."""
    from omegaconf.errors import OmegaConfBaseException

    while e.__cause__ is not None and not isinstance(e, OmegaConfBaseException):
        e = e.__cause__
    return e


def compose_config(cmd: str, overrides: list[str], return_hydra_config: bool = False):
    """`cmd`'s config composed with these overrides, outside any running Hydra application."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            return compose(config_name=cmd, overrides=overrides, return_hydra_config=return_hydra_config)
    finally:
        GlobalHydra.instance().clear()


def check(cfg) -> Any:
    """Run every range and cross-field rule of the schema on a composed config (raises ConfigError)."""
    if found := _unknown_key(cfg):
        raise ConfigError(not_a_setting(*found))
    try:
        return OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except datasets.OptionError as e:  # a dataset option out of range (the loader's own Options said so)
        raise ConfigError(str(e)) from e
    except Exception as e:  # a type OmegaConf could not convert while instantiating
        raise ConfigError(override_message(e)) from e


def override_message(e: BaseException) -> str:
    """One line for an OmegaConf/Hydra error about a value: the key, the value given and what is allowed."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    cause = root_cause(e)
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        if isinstance(cause, MissingMandatoryValue) and key:
            return f"{key} is required: add {key}=<value> (for a run: the run directory or a .pt file)" \
                if key == "checkpoint" else f"{key} is required: add {key}=<value>"
        msg = str(getattr(cause, "msg", None) or cause).splitlines()[0]
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
            return not_a_setting(key, detail=msg)
        wanted = {"converted to Integer": "an integer", "converted to Float": "a number",
                  "converted to Boolean": "true or false", "not a valid bool": "true or false",
                  "converted to String": "a string"}
        for word, what in wanted.items():
            if word in msg:
                value = getattr(cause, "value", None)
                return f"{key}={value}: must be {what}"
        return f"{key}: {msg}" if key else msg
    return str(e).splitlines()[0]
