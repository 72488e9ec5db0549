"""The typed configuration: every override is checked against the schema before any work, with one line
naming the key, the value given and what is allowed; every default exists once."""

import inspect

import pytest
from omegaconf import OmegaConf

from glossy_cli import schema as config
from glossy_cli.overrides import precheck
from glossy_cli.runs import effective_overrides, register_resolvers, run_name
from glossy_cli.schema import ConfigError, compose_config
from glossy_datasets import registry as datasets
from glossy_models import registry as models
from tests.helpers import tiny


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_resolvers()
    config.register()


def compose(cmd: str, overrides: list[str]):
    return compose_config(cmd, overrides)


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
    (["eval.jackknife=-1"], "eval.jackknife=-1: must be at least 0"),
    (["eval.interval_level=1.5"], "eval.interval_level=1.5: must lie strictly between 0 and 1"),
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
        precheck("train", args)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value) and e.value.exit_code == 2


@pytest.mark.parametrize("cmd,args,message", [
    ("eval", ["checkpoint=x", "eval.is_samples=0"], "eval.is_samples=0: must be at least 1"),
    ("data", ["action=delete"], "action=delete: must be list or fetch"),
    ("table", ["runs=x"], "runs is not a setting; valid: runs_root, results_dir"),
    ("figure", [], "checkpoint is required: add checkpoint=<value>"),
    ("eval", [], "checkpoint is required: add checkpoint=<value>"),
])
def test_other_commands_are_checked_too(cmd, args, message):
    with pytest.raises(ConfigError) as e:
        precheck(cmd, args)
    assert str(e.value).startswith(message), str(e.value)


def test_good_overrides_and_sweeps_pass():
    precheck("train", ["dataset=frey", "model=pixelhvae", "model.channels=32", "model.n_layers=4", "prior=vamp",
                        "prior.n_components=10", "train=quick", "eval.candidates=test", "seed=3"])
    precheck("train", ["-m", "prior=standard,vamp", "model=vae,hvae", "hydra/launcher=basic"])


def test_defaults_exist_once_and_come_from_the_library():
    cfg = compose("train", ["dataset=frey", "model=pixelhvae", "prior=vamp"])
    assert cfg.model.z_dim == inspect.signature(models.build).parameters["z_dim"].default
    assert cfg.model.channels == inspect.signature(models.PixelHVAE.__init__).parameters["channels"].default
    assert cfg.prior.n_components == models.PRIOR_DEFAULTS["n_components"]
    frey_load = datasets.DATASETS["frey"]
    for k, v in cfg.dataset.options.items():
        assert v == inspect.signature(frey_load).parameters[k].default, k
    # every dataset's options are exactly its loader's keyword arguments
    for name in datasets.BUILT_IN:
        load = datasets.DATASETS[name]
        kw = {p.name for p in inspect.signature(load).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert set(config.dataset_options(name)) == kw, name
    # the YAML files under conf/ carry no value that the schema already has (only presets do)
    for group in ("dataset", "model", "prior"):
        for f in (config.CONF_DIR / group).iterdir():
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
    assert name.startswith("synthetic-vae-standard-seed5__model-vae_big__train-seeded_"), name


def compose_hydra(cmd: str, overrides: list[str]):
    return compose_config(cmd, overrides, return_hydra_config=True)


# ----------------------------------------------------------------------------- the schema-driven fuzz

CHOICE_STRINGS = {"device", "eval.split", "action", "dataset.options.file"}  # free strings (paths) take anything
ANY_FINITE = {"prior.init_mean"}  # a number of any sign


def _leaves(cfg, prefix=""):
    from omegaconf import DictConfig, ListConfig
    from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

    for k in cfg.keys():
        node, key = cfg._get_node(k), f"{prefix}{k}"
        if isinstance(node, DictConfig):
            yield from _leaves(node, key + ".")
        elif isinstance(node, ListConfig) or isinstance(node, AnyNode):
            yield key, "list"
        elif isinstance(node, BooleanNode):
            yield key, "bool"
        elif isinstance(node, IntegerNode):
            yield key, "int"
        elif isinstance(node, FloatNode):
            yield key, "float"
        elif isinstance(node, StringNode):
            yield key, "str"


def _bad_values(key: str, kind: str) -> list[str]:
    if kind == "int":
        return ["abc", "1.5", "", "-1", "1e400"]
    if kind == "float":
        return ["abc", "nan", "inf", *([] if key in ANY_FINITE else ["-1", "-0.0"] if "lr" in key else ["-1"])]
    if kind == "bool":  # OmegaConf reads 0/1 and yes/no/on/off as booleans
        return ["maybe", "abc"]
    if kind == "str":
        return ["bogus"] if key in CHOICE_STRINGS else []
    return ["[]", "[test,bogus]"] if key == "eval.candidates" else []


def _fuzz_cases():
    setups = [("train", ["model=pixelhvae", "prior=vamp"]), ("eval", ["checkpoint=x"]),
              ("data", ["dataset=frey"]), ("table", []), ("figure", ["checkpoint=x"])]
    setups += [("train", [f"dataset={name}"]) for name in sorted(datasets.BUILT_IN)]
    seen = set()
    for cmd, base in setups:
        cfg = compose(cmd, base)
        for key, kind in _leaves(cfg):
            per_dataset = cmd == "train" and base[0].startswith("dataset=")
            if key.startswith(("dataset.options.", "dataset.name")) != per_dataset:
                continue  # each dataset's options once, under its own setup
            for value in _bad_values(key, kind):
                if (cmd, key, value) not in seen:
                    seen.add((cmd, key, value))
                    yield cmd, [*base, f"{key}={value}"], key


FUZZ = list(_fuzz_cases())
FIRST = {}  # the fast tier: the first wrong value of every key (once, under the first command that has it: eval.*
for case in FUZZ:  # is one schema under train and eval); the slow tier: all of them
    FIRST.setdefault(case[2], case)
FUZZ_FAST = list(FIRST.values())
FUZZ_SLOW = [c for c in FUZZ if c not in FUZZ_FAST]


def test_the_fuzz_covers_every_typed_key():
    keys = {key for _, _, key in FUZZ}
    for must in ("model.z_dim", "model.hidden", "model.channels", "model.n_layers", "prior.n_components",
                 "train.epochs", "train.lr", "eval.is_samples", "eval.memory_budget_gb", "eval.heldout",
                 "dataset.options.n_train", "dataset.options.flip", "dataset.options.clip",
                 "seed", "device", "action", "eval.candidates"):
        assert must in keys, must
    assert len(FUZZ) > 200


def _ids(cases):
    return [" ".join(a[-1:]) + f" ({c})" for c, a, _ in cases]


@pytest.mark.parametrize("cmd,args,key", [*FUZZ_FAST, *(pytest.param(*c, marks=pytest.mark.slow) for c in FUZZ_SLOW)],
                         ids=_ids(FUZZ_FAST) + _ids(FUZZ_SLOW))
def test_every_wrong_value_of_every_key_exits_2_with_one_line_naming_it(cmd, args, key, capsys, tmp_path,
                                                                         monkeypatch):
    # through the console script's entry point, in-process; the task is replaced so that a value that
    # slipped through fails here instead of starting a training
    from glossy_cli import main as main_module

    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setitem(main_module.TASKS, cmd, lambda cfg, typed: ran.append(cfg))
    with pytest.raises(SystemExit) as e:
        main_module.main([cmd, *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and not ran, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"glossy: error: {key}"), err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written: no run directory, no log


@pytest.mark.parametrize("value", ["''", "' '", "None", "[1,2]", "{a: 1}", "1e999", "-0", "0x10", "1_000"])
def test_garbage_for_an_integer_is_refused_or_read_as_hydra_reads_it(value):
    try:
        precheck("train", [f"train.epochs={value}"])
    except ConfigError as err:
        assert str(err).startswith("train.epochs") and "\n" not in str(err)
    else:  # what Hydra's grammar reads as an integer >= 1 (1_000 is 1000)
        assert value in ("1_000",)


def test_help_lists_the_groups_and_every_key_with_its_type_and_default():
    from glossy_cli.overrides import command_help

    text = command_help("train", ["model=pixelhvae", "prior=vamp"])
    assert "Hydra" not in text.splitlines()[0] and text.startswith("usage: glossy train")
    assert "  model: hvae, pixelhvae, vae" in text and "  prior: standard, vamp" in text
    cfg = compose("train", ["model=pixelhvae", "prior=vamp"])
    for key, _kind in _leaves(cfg):  # generated from the config itself: every key is there
        assert f"  {key}: " in text, key
    assert any(line.split() == ["model.channels:", "int", "=", "64"] for line in text.splitlines())
    assert any(line.split() == ["train.batches_per_epoch:", "int", "or", "null", "=", "null"]
               for line in text.splitlines())
    assert "model.channels" not in command_help("train", [])  # only the PixelHVAE has it


def test_a_user_model_file_trains_in_its_own_run_directory_and_every_record_names_it(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from glossy_cli.runs import read_checkpoint
    from glossy_cli.table import make_table
    from glossy_cli.train import train

    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "vae_small.yaml").write_text("defaults:\n  - /schema/model_vae@_here_\nhidden: 12\nz_dim: 3\n")
    # the model comes from the user's file, so the test-size overrides leave model.* alone
    small = [o for o in tiny("train.epochs=1", "train.batches_per_epoch=3", "eval.is_samples=3", "eval.ba_iters=5",
                             "eval.heldout=false", "eval.candidates=[test]") if not o.startswith("model.")]
    cfg = compose_hydra("train", ["model=vae_small", *small, f"runs_root={tmp_path}/runs",
                                  f"hydra.searchpath=[file://{conf}]"])
    HydraConfig.instance().set_config(cfg)
    run_dir = tmp_path / "runs" / cfg.hydra.run.dir.split("/")[-1]
    mine = effective_overrides(["model=vae_small", *small], [f"file://{conf}"])
    assert run_dir.name.startswith("synthetic-vae-standard-seed0__") and run_dir.name.endswith(
        run_name("synthetic", "vae", "standard", 0, mine)[-8:])  # the user file is in its hash
    assert run_dir.name != run_name("synthetic", "vae", "standard", 0, effective_overrides(["model=vae", *small]))
    del cfg.hydra
    result = train(cfg, run_dir, show_progress=False)
    assert result["model"] == "vae" and result["run_dir"] == str(run_dir)
    margs = read_checkpoint(run_dir / "best.pt")["model_args"]
    assert (margs["hidden"], margs["z_dim"]) == (12, 3)
    df, problems = make_table(tmp_path / "runs", tmp_path / "results")
    row = df[df["run"].notna()]
    assert not problems and list(row["run"]) == [run_dir.name] and list(row["model"]) == ["vae"]


def test_a_launcher_that_is_not_installed_is_one_line_naming_the_pip_install(capsys, monkeypatch, tmp_path):
    import importlib.util

    from tests.helpers import glossy_in_process

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.hydra_submitit") else real(name, *a))
    code, _, err = glossy_in_process(["train", "-m", "hydra/launcher=glossy_slurm", "train=quick", "seed=0,1"],
                                     capsys, monkeypatch, tmp_path)
    assert code == 2 and err.strip().splitlines() == [
        "glossy: error: hydra/launcher=glossy_slurm needs Hydra's submitit launcher, which is not installed: "
        "pip install -e '.[slurm]'"]
    assert not list(tmp_path.iterdir())  # refused before Hydra made any directory


def test_the_joblib_launcher_comes_with_the_default_install():
    import importlib.util

    assert importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None


def test_help_and_refused_overrides_import_no_torch(tmp_path):
    """glossy --help, <command> --help and a refused override answer without loading torch (counted as the
    modules loaded, not timed): one interpreter runs them in turn and then looks at sys.modules."""
    import subprocess
    import sys

    code = ("import sys\nfrom glossy_cli.main import main\n"
            "for argv in (['--help'], ['train', '--help'], ['eval', '--help'], ['train', 'model.z_dim=abc'],\n"
            "             ['train', 'prior=gaussian'], ['data', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.stderr.strip().splitlines()[-1] == "torch loaded: False", p.stderr[-2000:]
    assert "glossy train" in p.stdout and "model.z_dim=abc: must be an integer" in p.stderr
    assert "prior=gaussian: must be one of standard, vamp" in p.stderr
