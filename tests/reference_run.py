"""The quick synthetic reference run (tests/data/quick_synthetic_reference.json) and its comparison.

    python -m tests.reference_run make "<what made it>"  # run it; write the reference, this machine's fingerprint
    python -m tests.reference_run compare [ENV=VALUE ...]  # run it (in that environment); the largest differences

The run is `glossy train dataset=synthetic model=vae prior=standard train=quick` at one thread. `make` is run only
from code that is to define the numbers (see tests/test_reproduce.py for when it may be regenerated).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.fingerprint import fingerprint_of_a_run
from tests.helpers import REPO, run_glossy

REFERENCE = REPO / "tests" / "data" / "quick_synthetic_reference.json"
ARGS = ["train", "dataset=synthetic", "model=vae", "prior=standard", "train=quick"]
VOLATILE = {"run_dir", "train_time_s", "timing_s", "written", "checkpoint", "seeds_at"}  # where and when, not what
VOLATILE_LEAVES = {"stamp.commit"}  # the checkout it ran from: another with every commit, the numbers' own stamp aside
# float results may differ where the arithmetic differs (another kernel, another BLAS code path): 3 epochs of
# float32 training, then a float64 evaluation. Measured across forced kernel paths on one machine (tests/
# test_reproduce.py): at most 1.2e-5 relative (interval ends), 4.1e-5 nats absolute on the Blahut-Arimoto gaps
# (differences of two numbers near 87). A float passes within 1e-4 relative or 1e-3 nats absolute: ten times the
# largest difference seen, and a hundred times below these numbers' Monte Carlo error (over 0.1 nats at S = 20).
REL, ABS = 1e-4, 1e-3
# where an iterative solver stopped: other low bits can cross its tolerance a step earlier or later (and with
# Blahut-Arimoto's SQUAREM jumps, kept by comparing two NLLs, take another path to the same optimum)
SOLVER_PATH = {"ba_iterations", "ba_heldout_iterations", "ba_converged", "ba_heldout_converged"}


def quick_run(env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        p = run_glossy([*ARGS, f"runs_root={tmp}"], cwd=Path(tmp), timeout=900, env=env)
        if p.returncode != 0:
            raise AssertionError(p.stderr[-3000:])
        (run,) = Path(tmp).glob("synthetic-vae-standard-seed0*")
        return {k: v for k, v in json.loads((run / "result.json").read_text()).items() if k not in VOLATILE}


def leaves(value, path: str = "") -> dict:
    """{"key", "key.sub", "key[0]": leaf} of a result.json's nested dicts and lists."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in leaves(sub, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        return {k: v for i, sub in enumerate(value) for k, v in leaves(sub, f"{path}[{i}]").items()}
    return {path: value}


def differences(got: dict, want: dict, strict: bool = True) -> list[tuple[str, float, float]]:
    """(key, relative difference, absolute difference) of every float of `want` (nested ones included) that `got`
    does not reproduce bit for bit, largest first; a missing key or a different non-float raises."""
    from glossy.sandwiches import upgrade

    got, out = leaves(got), []
    for k, v in leaves(upgrade(want)).items():  # the reference's older names, today's
        if k in VOLATILE_LEAVES:
            continue
        assert k in got, f"{k} is missing"
        if not isinstance(v, float):
            if got[k] != v and k in SOLVER_PATH and not strict:
                continue
            assert got[k] == v, (k, got[k], v)
        elif got[k] != v:
            out.append((k, abs(got[k] - v) / max(abs(v), 1e-300), abs(got[k] - v)))
    return sorted(out, key=lambda d: -d[1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["make"] and len(argv) == 2:
        ref = {"environment": fingerprint_of_a_run(), "made_by": f"{' '.join(['glossy', *ARGS])}, "
               f"OMP_NUM_THREADS=1, {argv[1]}", "result": quick_run()}
        REFERENCE.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
        print(f"wrote {REFERENCE}: {ref['environment']}")
    elif argv[:1] == ["compare"]:
        env = dict(a.split("=", 1) for a in argv[1:])
        want = json.loads(REFERENCE.read_text())
        print("reference:", want["environment"], "\nhere:     ", fingerprint_of_a_run(env))
        diffs = differences(quick_run(env), want["result"])
        print(f"{len(diffs)} floats differ" + "".join(f"\n  {k}: {r:.2e} relative, {a:.2e} absolute"
                                                     for k, r, a in diffs[:12]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
