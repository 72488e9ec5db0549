"""The checks of a command's overrides before Hydra runs (every combination of a multirun's sweeps composed
against the schema, the launcher's plugin installed, an eval's checkpoint there) and `glossy <command> --help`,
generated from the composed configuration. A bad override is one line (ConfigError / GlossyError), before any
directory is created."""

from __future__ import annotations

from pathlib import Path

from glossy.errors import GlossyError

COMMANDS = {
    "train": "train a model (dataset=, model=, prior=, train=quick, ...), then evaluate it",
    "eval": "re-evaluate a saved model: glossy eval checkpoint=<run dir or .pt> [eval.is_samples=...]; a model trained "
            "elsewhere: checkpoint=<pythae folder> dataset=<name>, or factory=<pkg.module:function> "
            "checkpoint=<weights> dataset=<name>",
    "table": "gather every result.json under runs_root into results/table1.{csv,md,tex}",
    "figure": "draw Figure 1 (bounds over epochs) from a run: glossy figure checkpoint=<run dir> [out=...]",
    "data": "list the datasets and their status; download one ahead of a job: glossy data fetch dataset=<name>",
}


def command_help(cmd: str, args: list[str]) -> str:
    """`glossy <cmd> --help`: the config groups and every setting with its type and default, generated from
    the composed config (the schema and the YAML files, with the given overrides), so it cannot go stale."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode

    from .schema import CONF_DIR, compose_config

    cfg = compose_config(cmd, _task_overrides(args))
    lines = [f"usage: glossy {cmd} [group=option ...] [key=value ...]", "", COMMANDS[cmd], ""]
    groups = [g for g in ("dataset", "model", "prior", "train", "eval", "experiment")
              if g in cfg or (cmd, g) in (("data", "dataset"), ("train", "experiment"))]
    if cmd in ("train", "data"):
        lines.append("config groups (group=option; the options are conf/<group>/*.yaml):")
        for g in groups:
            opts = sorted(f.name[:-5] for f in (CONF_DIR / g).iterdir()
                          if f.name.endswith(".yaml") and not f.name.startswith("_"))
            if len(opts) > 1 or cmd == "data" or g == "experiment":
                lines.append(f"  {g}: {', '.join(opts)}")
        lines.append("")

    def kind(node) -> str:
        for cls, name in ((BooleanNode, "bool"), (IntegerNode, "int"), (FloatNode, "float")):
            if isinstance(node, cls):
                return name + (" or null" if node._is_optional() else "")
        if isinstance(node, (ListConfig, AnyNode)):
            return "list" if isinstance(node, ListConfig) else "any"
        return "str" + (" or null" if node._is_optional() else "")

    def leaves(node, prefix=""):
        for k in node.keys():
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                yield from leaves(child, f"{prefix}{k}.")
            else:
                shown = child._value()
                if isinstance(shown, str) and "${" in shown:  # an interpolation: show what it gives here
                    shown = f"{shown} ({node[k]})"
                shown = "[" + ", ".join(map(str, shown)) + "]" if isinstance(child, ListConfig) else shown
                yield f"{prefix}{k}", kind(child), "null" if shown is None else str(shown)

    rows = list(leaves(cfg))
    width = max(len(k) + len(t) for k, t, _ in rows) + 3
    lines.append("settings (key: type = default; ranges and rules: glossy_cli/schema.py):")
    lines += [f"  {(k + ': ' + t).ljust(width)} = {v}" for k, t, v in rows]
    lines += ["", "Every override is checked before any work; a bad one gives one line and exit status 2.",
              "Hydra's own options (multirun -m, launchers, --cfg job, --info): glossy " + cmd + " --hydra-help"]
    return "\n".join(lines)


def precheck(cmd: str, args: list[str], for_help: bool = False) -> None:
    """Checks that must happen before Hydra creates any directory: every override is composed against the
    schema (each combination of a multirun's sweeps, up to MAX_SWEEP_CHECKS) and checked."""
    if any(a in ("--hydra-help", "--info", "-i") or a.startswith("--info") for a in args):
        return
    _check_launcher(args)
    for combo in _sweep_combinations(_task_overrides(args)):
        _check_overrides(cmd, combo, for_help)
    if cmd == "eval":
        spec = next((a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")), None)
        if spec is not None and not Path(spec).expanduser().exists():
            raise GlossyError(f"checkpoint={spec}: no such file or directory")


# hydra/launcher=<choice>: the plugin package it needs and the pip install that brings it
LAUNCHERS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "pip install hydra-joblib-launcher "
                        "(a dependency of glossy: reinstall with pip install -e .)"),
             "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "pip install -e '.[slurm]'"),
             "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install -e '.[slurm]'"),
             "glossy_slurm": ("hydra_plugins.hydra_submitit_launcher", "pip install -e '.[slurm]'")}


def _check_launcher(args: list[str]) -> None:
    """A launcher whose plugin is not installed: one line naming the pip install that fixes it (Hydra's own
    message is several lines and names no package)."""
    import importlib.util

    for a in args:
        key, _, value = a.lstrip("+~").partition("=")
        if key == "hydra/launcher" and value in LAUNCHERS:
            module, fix = LAUNCHERS[value]
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                name = "joblib" if "joblib" in module else "submitit"
                raise GlossyError(f"hydra/launcher={value} needs Hydra's {name} launcher, which is not installed: "
                                  f"{fix}")


MAX_SWEEP_CHECKS = 256
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}


def _task_overrides(args: list[str]) -> list[str]:
    """The key=value overrides of the task's config among Hydra's command-line arguments (flags, their
    values and hydra.* / hydra/... overrides left out)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in _FLAGS_WITH_VALUE:
            skip = True
        elif not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/")):
            out.append(a)
    return out


def _sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """The override lists a multirun would launch (a,b,c sweeps expanded), at most MAX_SWEEP_CHECKS."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise GlossyError(str(e).splitlines()[0]) from e
    choices = []
    for o, text in zip(parsed, overrides, strict=True):
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(c) for c in itertools.islice(itertools.product(*choices), MAX_SWEEP_CHECKS)]


def _missing_option_message(text: str) -> str:
    """Hydra's "Could not find 'model/foo' ... Available options in 'model': ..." as one line."""
    import re

    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
    if not found or not options:
        return " ".join(text.split())
    group, value = found.groups()
    return f"{group}={value}: must be one of {', '.join(options)}"


def _check_overrides(cmd: str, overrides: list[str], for_help: bool = False) -> None:
    """Compose `cmd`'s config with these overrides and run the schema's checks: one ConfigError line. for_help: a
    required value not given yet (`glossy eval --help` without checkpoint=) is no error."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from .schema import ConfigError, check, compose_config, not_a_setting, override_message, root_cause

    try:
        cfg = compose_config(cmd, overrides)
    except MissingConfigException as e:  # an unknown group option: Hydra's message lists the valid ones
        raise ConfigError(_missing_option_message(str(e))) from e
    except (HydraException, OmegaConfBaseException) as e:
        cause = root_cause(e)
        key = getattr(cause, "full_key", None)
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            try:  # the keys it could have been, from the config without that override
                groups = [o for o in overrides if "." not in (k := o.split("=", 1)[0]) and k.lstrip("+~") != key]
                node = compose_config(cmd, groups)
                valid = list((OmegaConf.select(node, parent) if parent else node).keys())
            except Exception:  # listing the keys is a courtesy; the message stands without it
                valid = None
            raise ConfigError(not_a_setting(key, valid)) from e
        raise ConfigError(override_message(e)) from e
    if for_help:
        from omegaconf import open_dict

        with open_dict(cfg):
            for key in [k for k in cfg if OmegaConf.is_missing(cfg, k)]:
                cfg[key] = "<required>"
    check(cfg)
