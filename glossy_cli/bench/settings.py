"""The benchmark's settings: flags over `BenchSettings`' defaults (the one argument style of glossy's scripts:
`--key value`, `--flag` / `--no-flag` for yes-or-no, repeated `--note TEXT`), and the quick mode's sizes."""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, dataclass, field, fields


@dataclass
class BenchSettings:
    quick: bool = False  # tiny sizes: every operation runs once (the test suite); not a measurement
    threads: int | None = None  # torch threads (null: torch's default)
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    results_dir: str = "results"  # bench.csv and bench.md go here
    seed: int = 0
    repeats: int = 3  # each timing is the best of this many runs
    peak_n: int = 2048  # the peak: an n x n fp32 matrix product
    train_points: int = 2000  # training: optimiser steps on MNIST-shaped random binary images
    train_batch: int = 100
    train_steps: int = 20
    pixel_train_steps: int = 2
    is_points: int = 4  # importance sampling: S samples on is_points points (fast), naive_points (naive)
    is_samples: int = 5000
    pixel_is_points: int = 2
    pixel_is_samples: int = 100
    naive_points: int = 1
    naive_chunk: int = 100  # the reference's MB: samples per encoder + decoder call
    matrix_n: int = 4000  # the glossy matrix: M = N
    logistic_n: int = 2000
    naive_matrix_rows: int = 4
    e2e: bool = True  # end to end: evaluate() on one VAE in a fresh process
    e2e_points: int = 10000
    e2e_samples: int = 5000
    e2e_jackknife: int = 20
    interval_groups: int = 20  # the interval row: jackknife groups (eval.jackknife's default)
    heldout_atoms: int = 50000  # the held-out fit's solve: training atoms (and the model's prior)...
    heldout_points: int = 10000  # ...on this many validation points, at the default budget
    best_prior_steps: int = 10  # plain Blahut-Arimoto steps timed for its baseline
    logistic_is_points: int = 2  # importance sampling at CIFAR-10's shape: images (at is_samples each)
    notes: list[str] = field(default_factory=list)  # free-text lines appended to bench.md


AT_LEAST_ZERO = ("e2e_jackknife", "seed")  # every other integer setting is at least 1

# sizes of the quick mode (the test suite): every operation runs, on tiny inputs
QUICK_SIZES = {
    "repeats": 1, "peak_n": 256, "train_points": 64, "train_batch": 8, "train_steps": 2, "pixel_train_steps": 1,
    "is_points": 2, "is_samples": 20, "pixel_is_points": 1, "pixel_is_samples": 2, "naive_points": 1, "naive_chunk": 10,
    "matrix_n": 48, "naive_matrix_rows": 2, "logistic_n": 24, "e2e_points": 40, "e2e_samples": 10,
    "e2e_jackknife": 5, "interval_groups": 5, "e2e": True, "heldout_atoms": 300, "heldout_points": 60,
    "best_prior_steps": 3, "logistic_is_points": 1,
}


class _Refused(ValueError):
    pass


class FlagParser(argparse.ArgumentParser):
    """argparse that raises one line (a ValueError) instead of printing the usage and exiting."""

    def error(self, message: str):
        raise _Refused(message)


def dataclass_parser(cls, prog: str, description: str) -> FlagParser:
    """A parser with one flag per field of the dataclass `cls` (`--field-name`, its type and default from the
    field; a bool is --name / --no-name, a list of str a repeated flag named in the singular)."""
    ap = FlagParser(prog=prog, description=description, allow_abbrev=False)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        if kind is bool:
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        elif typing.get_origin(kind) is list:
            ap.add_argument(flag.rstrip("s"), dest=f.name, action="append", default=default, metavar="TEXT")
        else:
            base = next(a for a in typing.get_args(kind) if a is not type(None)) \
                if isinstance(kind, types.UnionType) else kind
            ap.add_argument(flag, dest=f.name, type=base, default=default, metavar=base.__name__.upper())
    return ap


def parse_settings(args: list[str]) -> BenchSettings:
    """The flags over BenchSettings' defaults; a bad flag or value raises ValueError (one line)."""
    st = BenchSettings(**vars(dataclass_parser(BenchSettings, "bench", "").parse_args(args)))
    for f in fields(st):
        value, low = getattr(st, f.name), 0 if f.name in AT_LEAST_ZERO else 1
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise ValueError(f"--{f.name.replace('_', '-')} {value}: must be at least {low}")
    return st
