"""The `glossy` command: dispatch to one Hydra application per subcommand."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from glossy.errors import GlossyError

log = logging.getLogger("glossy")

COMMANDS = {
    "train": "train a model (dataset=, model=, prior=, train=quick, ...), then evaluate it",
    "eval": "re-evaluate a saved model: glossy eval checkpoint=<run dir or .pt> [eval.is_samples=...]",
    "table": "gather every result.json under runs_root into results/table1.{csv,md,tex}",
    "figure": "draw Figure 1 (bounds over epochs) from a run: glossy figure checkpoint=<run dir> [out=...]",
    "data": "list the datasets and their status; download one ahead of a job: glossy data fetch dataset=<name>",
}

USAGE = """usage: glossy <command> [hydra overrides ...]

Can this latent-variable model still be improved by a better prior, or a better likelihood?

commands:
{commands}

Every command takes Hydra overrides (key=value) and --help, e.g.
  glossy train dataset=synthetic model=vae prior=standard train=quick
  glossy train -m prior=standard,vamp
  glossy eval checkpoint=runs/synthetic-vae-standard-seed0 eval.is_samples=1000
  glossy table
"""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(commands="\n".join(f"  {k.ljust(width)}  {v}" for k, v in COMMANDS.items()))


def guarded(fn):
    """Turn a GlossyError into one clear message on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(cfg):
        from .schema import check

        try:
            check(cfg)
            return fn(cfg)
        except GlossyError as e:
            print(f"glossy: error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:  # SIGINT outside the training loop (which handles its own)
            print("glossy: interrupted (SIGINT); every file glossy writes is complete or absent: re-run the "
                  "same command", file=sys.stderr)
            sys.exit(130)

    return wrapper


def summary(r: dict) -> str:
    """The result in a few lines: NLL, the glossy statistics of each candidate source, the bounds."""
    rows = [(f"NLL (importance sampled, S={r['is_samples']}, N={r['n_points']})", r["nll"]),
            ("-ELBO", -r["elbo"] if "elbo" in r else None)]
    for src in r.get("candidates", ["test"]):
        sfx = "" if src == "test" and "glossy_max" in r else f"_{src}"
        m = r.get(f"n_candidates{sfx}", r.get(f"n_candidates_{src}"))
        rows += [(f"glossy max, {src} candidates (M={m})", r.get(f"glossy_max{sfx}")),
                 (f"glossy std, {src} candidates", r.get(f"glossy_std{sfx}")),
                 (f"lower bound NLL - max, {src} candidates", r.get(f"lower_bound{sfx}"))]
    rows += [("nll_ba (re-weighted prior, in-sample)", r.get("nll_ba")),
             ("nll_ba_heldout (fitted on validation images)", r.get("nll_ba_heldout")),
             ("true NLL", r.get("true_nll")), ("exact finite-latent lower bound", r.get("exact_lower_bound"))]
    rows = [(k, v) for k, v in rows if v is not None]
    width = max(len(k) for k, _ in rows)
    lines = [f"{r['dataset']} / {r['model']} / {r['prior']}  ({r.get('run_dir', '')})"]
    lines += [f"  {k.ljust(width)}  {v:12.3f}" for k, v in rows]
    for key, name in (("glossy_max_ci", "glossy max, test, 95% CI"),
                      ("glossy_max_train_ci", "glossy max, train, 95% CI")):
        if key in r:
            lo, hi = r[key]
            lines.append(f"  {name.ljust(width)}  [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)


def flush_denormals() -> None:
    """Treat subnormal floats (below ~1e-38 in float32) as zero on the CPU. Training drives some activations
    and gradients (Adam's second moments among them) into that range, where x86 arithmetic is many times
    slower: a Frey Faces HVAE with the VampPrior went from 1-2 s to 11-20 s an epoch over its first 250
    epochs and ran at 1.6-2.5 s after resuming with flushing (torch 2.14.1, this machine);
    `scripts/denormal_speed.py` measures it on any run's last.pt. No log-likelihood depends on such values."""
    import torch

    torch.set_flush_denormal(True)


def full_float32() -> None:
    """Keep float32 products and convolutions in full float32 on a GPU: PyTorch lets cuDNN's convolutions
    use TF32 (10-bit mantissa) by default, which would make a PixelHVAE's log-likelihoods on a GPU differ
    from the same model's on the CPU by more than the estimator's rounding. Only CUDA reads these flags."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _train(cfg):
    from .preempt import deferred

    with deferred():  # a SLURM job's pre-emption signal during the set-up waits for the training loop
        return _train_deferred(cfg)


def _train_deferred(cfg):
    from hydra.core.hydra_config import HydraConfig

    from .train import train

    flush_denormals()
    full_float32()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = not _holds_a_run(run_dir)
    try:
        result = train(cfg, run_dir, show_progress=sys.stderr.isatty())
    except GlossyError:
        if fresh:  # refused before any epoch (data missing, a download failed): leave no run directory behind
            _remove_unstarted_run(run_dir)
        raise
    print(summary(result))
    return result


# what Hydra and the run lock put into a run directory before glossy writes anything of its own
_HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", ".hydra", "train.log", ".lock")


def _holds_a_run(run_dir: Path) -> bool:
    """Whether glossy has written anything of a run into run_dir (a state, a checkpoint, a result, its config)."""
    from .runs import BEST, LAST, RESULT

    return any((run_dir / f).exists() for f in (LAST, BEST, RESULT, "config.yaml"))


def _remove_unstarted_run(run_dir: Path) -> None:
    """Remove a run directory that holds only what Hydra wrote for this command; anything else stays."""
    if _holds_a_run(run_dir):
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


def _eval(cfg):
    from .eval_cmd import evaluate_checkpoint
    from .runs import resolve_device

    flush_denormals()
    full_float32()
    result = evaluate_checkpoint(cfg, resolve_device(cfg.device), show_progress=sys.stderr.isatty() or "log")
    print(summary(result))
    return result


def _table(cfg):
    from .table import make_table, to_markdown

    df, problems = make_table(cfg.runs_root, cfg.results_dir)
    for p in problems:
        print(f"glossy: skipped {p}", file=sys.stderr)
    print(to_markdown(df[df["nll"].notna()]))
    print(f"wrote {Path(cfg.results_dir) / 'table1.csv'}, table1.md, table1.tex")


def _data(cfg):
    from .data_cmd import data_task

    return data_task(cfg)


def _figure(cfg):
    from .figure import make_figure

    for p in make_figure(cfg.checkpoint, cfg.out):
        print(f"wrote {p}")


TASKS = {"train": _train, "eval": _eval, "table": _table, "figure": _figure, "data": _data}


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


def _precheck(cmd: str, args: list[str]) -> None:
    """Checks that must happen before Hydra creates any directory: every override is composed against the
    schema (each combination of a multirun's sweeps, up to MAX_SWEEP_CHECKS) and checked."""
    if any(a in ("--hydra-help", "--info", "-i") or a.startswith("--info") for a in args):
        return
    _check_launcher(args)
    for combo in _sweep_combinations(_task_overrides(args)):
        _check_overrides(cmd, combo)
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


def _check_overrides(cmd: str, overrides: list[str]) -> None:
    """Compose `cmd`'s config with these overrides and run the schema's checks: one ConfigError line."""
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
    check(cfg)


def main(argv: list[str] | None = None) -> None:
    import hydra

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else 2)
    cmd, rest = argv[0], argv[1:]
    if cmd == "data" and rest and rest[0] in ("fetch", "list"):
        rest = [f"action={rest[0]}", *rest[1:]]
    if cmd in ("-V", "--version"):
        from glossy import __version__

        print(f"glossy {__version__}")
        return
    if cmd not in TASKS:
        print(f"glossy: error: unknown command {cmd!r}; valid: {', '.join(TASKS)}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    from .runs import register_resolvers
    from .schema import CONF_DIR, register

    register_resolvers()
    register()
    try:
        if any(a in ("--help", "-h") for a in rest):
            _precheck(cmd, [a for a in rest if a not in ("--help", "-h")])
            text = command_help(cmd, rest)
            try:
                print(text)
            except BrokenPipeError:  # `glossy train --help | head`
                sys.stderr.close()
            return
        _precheck(cmd, rest)
    except GlossyError as e:
        print(f"glossy: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    logging.getLogger("glossy").setLevel(logging.INFO)
    sys.argv = [f"glossy {cmd}", *rest]
    app = hydra.main(config_path=str(CONF_DIR), config_name=cmd, version_base=None)(guarded(TASKS[cmd]))
    on_slurm = any(a.startswith("hydra/launcher=") and ("slurm" in a or "submitit" in a) for a in rest)
    if on_slurm:  # a job that ends without a result reaches us, not Hydra's traceback printer
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except ValueError as e:  # Hydra's own refusal of its flags (e.g. -m with --cfg)
        if "can be specified" not in str(e):
            raise
        print(f"glossy: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if not on_slurm or type(e).__name__ != "UncompletedJobError":
            raise
        from .slurm import describe_failure

        print(f"glossy: error: {describe_failure(str(e))}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
