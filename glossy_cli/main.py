"""The `glossy` command: dispatch to one Hydra application per subcommand."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from glossy.errors import GlossyError

from .overrides import COMMANDS, command_help, precheck

log = logging.getLogger("glossy")


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
    """Check the composed config once and hand the task both it and its typed form (schema.check); turn a
    GlossyError into one clear message on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(cfg):
        from .schema import check

        try:
            return fn(cfg, check(cfg))  # the composed config and the same checked and typed: one check a run
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
    from glossy.sandwiches import bound_name

    rows = [(f"NLL (importance sampled, S={r['is_samples']}, N={r['n_points']})", r["nll"]),
            ("-ELBO", -r["elbo"] if "elbo" in r else None)]
    for src in r.get("candidates", ["test"]):
        sfx = "" if src == "test" and "glossy_max" in r else f"_{src}"
        m = r.get(f"n_candidates{sfx}", r.get(f"n_candidates_{src}"))
        rows += [(f"glossy max, {src} candidates (M={m})", r.get(f"glossy_max{sfx}")),
                 (f"glossy std, {src} candidates", r.get(f"glossy_std{sfx}")),
                 (f"lower bound NLL - max, {src} candidates" if src == "test" else
                  f"bound over priors on the {src} codes, NLL - max", r.get(bound_name(sfx)))]
    rows += [("glossy max, searched sup (gradient ascent)", r.get("glossy_max_searched")),
             ("lower bound NLL - searched sup", r.get("lower_bound_searched")),
             ("nll_ba (re-weighted prior, in-sample)", r.get("nll_ba")),
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
    epochs and ran at 1.6-2.5 s after resuming with flushing (torch 2.14.1, this machine). No log-likelihood
    depends on such values."""
    import torch

    torch.set_flush_denormal(True)


def full_float32() -> None:
    """Keep float32 products and convolutions in full float32 on a GPU: PyTorch lets cuDNN's convolutions
    use TF32 (10-bit mantissa) by default, which would make a PixelHVAE's log-likelihoods on a GPU differ
    from the same model's on the CPU by more than the estimator's rounding. Only CUDA reads these flags."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _train_command(cfg, cmd):
    from .signals import deferred

    with deferred():  # a SLURM job's pre-emption signal during the set-up waits for the training loop
        return _train_in_run_dir(cfg, cmd)


def _train_in_run_dir(cfg, cmd):
    from hydra.core.hydra_config import HydraConfig

    from .runs import holds_a_run, remove_unstarted_run
    from .train import train

    flush_denormals()
    full_float32()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = not holds_a_run(run_dir)
    try:
        result = train(cfg, run_dir, show_progress=sys.stderr.isatty(), cmd=cmd)
    except GlossyError:
        if fresh:  # refused before any epoch (data missing, a download failed): leave no run directory behind
            remove_unstarted_run(run_dir)
        raise
    print(summary(result))
    return result


def _eval_command(cfg, cmd):
    from .eval_cmd import evaluate_checkpoint
    from .runs import resolve_device

    flush_denormals()
    full_float32()
    result = evaluate_checkpoint(cfg, resolve_device(cmd.device), show_progress=sys.stderr.isatty() or "log")
    print(summary(result))
    return result


def _table_command(cfg, cmd):
    from .table import make_table, to_markdown

    df, problems = make_table(cmd.runs_root, cmd.results_dir)
    for p in problems:
        print(f"glossy: skipped {p}", file=sys.stderr)
    print(to_markdown(df[df["nll"].notna()]))
    print(f"wrote {Path(cmd.results_dir) / 'table1.csv'}, table1.md, table1.tex")


def _data_command(cfg, cmd):
    from .data_cmd import data_task

    return data_task(cfg)


def _figure_command(cfg, cmd):
    from .figure import make_figure

    for p in make_figure(cmd.checkpoint, cmd.out):
        print(f"wrote {p}")


TASKS = {"train": _train_command, "eval": _eval_command, "table": _table_command, "figure": _figure_command,
         "data": _data_command}


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
            precheck(cmd, [a for a in rest if a not in ("--help", "-h")], for_help=True)
            text = command_help(cmd, rest)
            try:
                print(text)
            except BrokenPipeError:  # `glossy train --help | head`
                sys.stderr.close()
            return
        precheck(cmd, rest)
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
