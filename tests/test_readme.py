"""The documented own-model example (docs/library.md) runs as written and gives a consistent sandwich; the
README's Table 1 is the one made from the committed results."""

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


def test_the_readme_table_is_what_readme_table_py_makes_from_the_committed_results():
    from scripts.readme_table import readme_table

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "README.md").read_text()
    block = re.search(r"<!-- readme_table -->\n(.*?)\n<!-- /readme_table -->", text, re.S)
    assert block, "README.md has no readme_table block"
    assert block.group(1) == readme_table(repo / "results" / "table1.csv"), \
        "README's Table 1 is stale: run `python scripts/readme_table.py --write`"
