"""The typed configuration: every override is checked against the schema before any work, with one line
naming the key, the value given and what is allowed; every default exists once."""

import inspect

import glossy_datasets as datasets
import glossy_models as models
import pytest
from omegaconf import OmegaConf

from glossy_cli import config
from glossy_cli.config import ConfigError
from glossy_cli.main import _precheck
from glossy_cli.runs import register_resolvers


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_resolvers()
    config.register()


def compose(cmd: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("glossy_conf", version_base=None):
            return hydra_compose(config_name=cmd, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("args,message", [
    (["model.z_dim=abc"], "model.z_dim=abc: must be an integer"),
    (["prior=vamp", "prior.n_components=-5"], "prior.n_components=-5: must be at least 1"),
    (["model.hidden=0"], "model.hidden=0: must be at least 1"),
    (["model=pixelhvae", "model.channels=0"], "model.channels=0: must be at least 1"),
    (["model.channels=8"], "model.channels is not a setting of model; valid: name, z_dim, hidden"),
    (["model=transformer"], "model=transformer: must be one of hvae, pixelhvae, vae"),
    (["train=bogus"], "train=bogus: must be one of default, quick"),
    (["train.epochs=-3"], "train.epochs=-3: must be at least 1"),
    (["train.warmup=3000"], "train.warmup=3000: must be at most train.epochs=2000"),
    (["train.early_stopping=0"], "train.early_stopping=0: must be at least 1"),
    (["train.lr=abc"], "train.lr=abc: must be a number"),
    (["train.lr=0"], "train.lr=0.0: must be a positive number"),
    (["train.batches_per_epoch=0"], "train.batches_per_epoch=0: must be at least 1 (or null)"),
    (["train.foo=1"], "train.foo is not a setting of train; valid: epochs, batch_size,"),
    (["+train.foo=1"], "train.foo is not a setting of train; valid: epochs,"),
    (["eval.is_samples=0"], "eval.is_samples=0: must be at least 1"),
    (["eval.bootstrap=-1"], "eval.bootstrap=-1: must be at least 0"),
    (["eval.bootstrap_level=1.5"], "eval.bootstrap_level=1.5: must lie strictly between 0 and 1"),
    (["eval.memory_budget_gb=0"], "eval.memory_budget_gb=0.0: must be a positive number"),
    (["eval.candidates=[test,trian]"], "eval.candidates=[test,trian]: must be a non-empty list of test, train"),
    (["eval.candidates=[]"], "eval.candidates=[]: must be a non-empty list"),
    (["eval.heldout=maybe"], "eval.heldout=maybe: must be true or false"),
    (["eval.split=dev"], "eval.split=dev: must be test, val or train"),
    (["seed=1.5"], "seed=1.5: must be an integer"),
    (["device=gpu"], "device=gpu: must be auto, cpu, cuda or cuda:N"),
    (["dataset.options.flip=2"], "dataset.options.flip=2.0: must lie in [0, 0.5]"),
    (["dataset.options.nope=1"], "dataset.options.nope is not a setting of dataset.options; valid: n_train"),
    (["dataset=frey", "dataset.options.n_train=x"], "dataset.options.n_train=x: must be an integer"),
    (["dataset=frey", "dataset.options.file=faces.npy"], "dataset.options.file=faces.npy: must be one of auto"),
    (["dataset=histopathology", "dataset.options.clip=0.7"], "dataset.options.clip=0.7: must lie strictly"),
    (["-m", "prior=standard,vamp", "train.warmup=0", "train.epochs=5,0"], "train.epochs=0: must be at least 1"),
    (["--cfg", "job", "model.z_dim=-1"], "model.z_dim=-1: must be at least 1"),
])
def test_every_bad_override_is_one_line_naming_key_value_and_what_is_allowed(args, message):
    with pytest.raises(ConfigError) as e:
        _precheck("train", args)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value) and e.value.exit_code == 2


@pytest.mark.parametrize("cmd,args,message", [
    ("eval", ["checkpoint=x", "eval.is_samples=0"], "eval.is_samples=0: must be at least 1"),
    ("bench", ["bench.repeats=0"], "bench.repeats=0: must be at least 1"),
    ("bench", ["bench.threads=abc"], "bench.threads=abc: must be an integer"),
    ("data", ["action=delete"], "action=delete: must be list or fetch"),
    ("table", ["runs=x"], "runs is not a setting; valid: runs_root, results_dir"),
])
def test_other_commands_are_checked_too(cmd, args, message):
    with pytest.raises(ConfigError) as e:
        _precheck(cmd, args)
    assert str(e.value).startswith(message), str(e.value)


def test_good_overrides_and_sweeps_pass():
    _precheck("train", ["dataset=frey", "model=pixelhvae", "model.channels=32", "model.n_layers=4", "prior=vamp",
                        "prior.n_components=10", "train=quick", "eval.candidates=test", "seed=3"])
    _precheck("train", ["-m", "prior=standard,vamp", "model=vae,hvae", "hydra/launcher=basic"])


def test_defaults_exist_once_and_come_from_the_library():
    cfg = compose("train", ["dataset=frey", "model=pixelhvae", "prior=vamp"])
    assert cfg.model.z_dim == inspect.signature(models.build).parameters["z_dim"].default
    assert cfg.model.channels == inspect.signature(models.PixelHVAE.__init__).parameters["channels"].default
    assert cfg.prior.n_components == inspect.signature(models.build).parameters["n_components"].default
    frey_load = datasets.DATASETS["frey"]
    for k, v in cfg.dataset.options.items():
        assert v == inspect.signature(frey_load).parameters[k].default, k
    # every dataset's options are exactly its loader's keyword arguments
    for name, load in datasets.DATASETS.items():
        kw = {p.name for p in inspect.signature(load).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert set(config.dataset_options(name)) == kw, name
    # the YAML files under conf/ carry no value that the schema already has (only presets do)
    from importlib.resources import files

    for group in ("dataset", "model", "prior"):
        for f in (files("glossy_conf") / group).iterdir():
            if f.name.endswith(".yaml"):
                body = OmegaConf.create(f.read_text())
                assert set(body.keys()) == {"defaults"}, f.name


def test_the_run_directory_takes_identity_and_seed_from_the_composed_config(tmp_path):
    # a user's own model file (name: vae) and a seed set in a file, not on the command line
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "vae_big.yaml").write_text("defaults:\n  - /schema/model_vae@_here_\nhidden: 500\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "seeded.yaml").write_text("# @package _global_\ndefaults:\n  - /train/default@train\n"
                                                    "seed: 5\n")
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_hydra("train", ["model=vae_big", "train=seeded", f"hydra.searchpath=[file://{tmp_path}]"])
    HydraConfig.instance().set_config(cfg)
    name = cfg.hydra.run.dir.split("/")[-1]
    assert cfg.model.hidden == 500 and cfg.seed == 5
    assert name.startswith("synthetic-vae-standard-seed5"), name


def compose_hydra(cmd: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("glossy_conf", version_base=None):
            return hydra_compose(config_name=cmd, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
