"""The documented own-model example (docs/library.md) runs as written and gives a consistent sandwich."""

import re
from pathlib import Path


def test_readme_own_model_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class FactorModel" in b)
    scope: dict = {}
    exec(compile(block, "docs/library.md", "exec"), scope)
    r = scope["r"]
    assert r["lower_bound"] <= r["nll_ba"] <= r["nll"]
    assert "glossy_max_ci" in r
