"""The refactors change no number: the synthetic quick run, trained and evaluated by today's code, gives the
result.json that the code before them wrote (tests/data/quick_synthetic_reference.json)."""

import json
import platform

import pytest
import torch

from tests.helpers import REPO, run_glossy

REFERENCE = REPO / "tests" / "data" / "quick_synthetic_reference.json"


def _cpu() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


@pytest.mark.slow  # a training and its evaluation through the console script
def test_the_quick_synthetic_run_reproduces_the_reference_result(tmp_path):
    ref = json.loads(REFERENCE.read_text())
    args = ["train", "dataset=synthetic", "model=vae", "prior=standard", "train=quick", f"runs_root={tmp_path}"]
    p = run_glossy(args,
                   cwd=tmp_path, timeout=900)  # one thread, as the reference
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = tmp_path.glob("synthetic-vae-standard-seed0*")
    got = json.loads((run / "result.json").read_text())
    want = ref["result"]
    assert set(want) <= set(got), set(want) - set(got)
    same_machine = ref["environment"] == {"torch": torch.__version__, "cpu": _cpu(), "threads": 1}
    for k, v in want.items():
        if same_machine or not isinstance(v, float):  # bit for bit where the reference was made (README: other
            assert got[k] == v, (k, got[k], v)  # machines and torch versions change the low bits)
        else:
            assert got[k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
