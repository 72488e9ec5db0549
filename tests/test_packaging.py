"""One import package, `glossy`, whose sub-packages are the repository's top-level folders; Python started at
the repository root loads none of glossy's files under a second name and hides no installed `datasets` or
`models` package."""

import fnmatch
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import glossy
from tests.helpers import REPO

FOLDERS = {"cli": "glossy_cli", "models": "models", "datasets": "datasets", "conf": "conf"}

# run from the repository root: import every module of glossy by its name, then the card's folder names
# as a REPL there would; report each loaded file of the repository with the module names it was loaded as
IMPORT_ALL = r"""
import importlib, json, os, sys
root = os.getcwd()
names = []
for sub in ("", "cli", "models", "datasets"):
    d = os.path.join(root, "glossy", sub)
    names += ["glossy" + (f".{sub}" if sub else "") + ("" if f == "__init__.py" else "." + f[:-3])
              for f in sorted(os.listdir(d)) if f.endswith(".py")]
for n in names:
    importlib.import_module(n)
for n in sys.argv[1:]:
    importlib.import_module(n)
ours = tuple(os.path.join(root, d) + os.sep for d in ("glossy", "glossy_cli", "models", "datasets", "conf", "scripts",
                                                      "tests"))
files = {}
for name, m in list(sys.modules.items()):
    f = getattr(m, "__file__", None)
    if f and os.path.realpath(f).startswith(ours):
        files.setdefault(os.path.realpath(f), []).append(name)
print(json.dumps({"files": files, "loaded": len(names),
                  "origins": {n: getattr(sys.modules[n], "__file__", None) for n in sys.argv[1:]}}))
"""


def _from_repo_root(*imports: str, pythonpath: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    p = subprocess.run([sys.executable, "-c", IMPORT_ALL, *imports], cwd=REPO, capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_subpackages_are_the_top_level_folders_and_the_public_face_resolves():
    for sub, folder in FOLDERS.items():
        mod = __import__(f"glossy.{sub}", fromlist=["_"])
        assert [Path(p).resolve() for p in mod.__path__] == [REPO / folder], sub
    assert Path(glossy.__file__).resolve() == REPO / "glossy" / "__init__.py"
    from glossy.cli.bounds import log_c
    from glossy.cli.evaluate import evaluate

    assert glossy.evaluate is evaluate and glossy.bounds.log_c is log_c
    assert type(glossy.build_model("vae", "standard", (1, 4, 4), "binary", z_dim=2, hidden=3)).__name__ == "VAE"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = glossy.nope
    for folder in FOLDERS.values():  # namespace folders: no __init__.py that a second name could execute
        assert not (REPO / folder / "__init__.py").exists(), folder


def test_no_file_is_loaded_under_two_names_from_the_repository_root():
    out = _from_repo_root("models", "datasets", "conf", "glossy_cli")
    assert out["loaded"] > 25
    twice = {f: n for f, n in out["files"].items() if len(n) > 1}
    assert not twice, f"loaded under two names: {twice}"
    # `import datasets` there finds only a namespace folder: none of glossy's code runs as `datasets`
    assert out["origins"] == {"models": None, "datasets": None, "conf": None, "glossy_cli": None}


def test_an_installed_datasets_or_models_package_wins_over_the_folders_at_the_repository_root(tmp_path):
    for name in ("datasets", "models"):  # stand-ins for Hugging Face's `datasets` and any `models`
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("WHO = 'installed'\n")
    out = _from_repo_root("datasets", "models", pythonpath=tmp_path)
    for name in ("datasets", "models"):
        assert Path(out["origins"][name]).resolve() == (tmp_path / name / "__init__.py").resolve(), name


def test_config_groups_are_found_where_the_code_looks():
    from glossy.cli.config import CONF_DIR

    for group in ("dataset", "model", "prior", "train", "eval", "experiment"):
        assert list((CONF_DIR / group).glob("*.yaml")), group


@pytest.mark.slow  # builds a wheel (an isolated build environment from the package index)
def test_the_wheel_holds_one_package_with_its_data_and_nothing_at_the_top_level(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "warning" not in (p.stdout + p.stderr).lower().replace("warning: location", ""), p.stderr
    (wheel,) = tmp_path.glob("glossy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"glossy"}
    for want in ("glossy/__init__.py", "glossy/cli/main.py", "glossy/models/vae.py", "glossy/datasets/mnist.py",
                 "glossy/conf/train.yaml", "glossy/conf/dataset/mnist.yaml", "glossy/cli/paper_table1.csv",
                 "glossy/conf/hydra/launcher/glossy_slurm.yaml"):
        assert want in names, want
    assert not [n for n in names if "__pycache__" in n]


def test_the_readme_layout_names_every_top_level_folder_and_each_folder_says_what_lives_there():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    listed = {line.split()[0].rstrip("/") for line in layout.splitlines()[3:] if line[:1].strip()}
    # the repository's own folders: not hidden, not generated (the folder patterns of .gitignore: runs/ that
    # scripts/run.sh writes, build/, *.egg-info/, ...)
    generated = [ln.strip().strip("/") for ln in (REPO / ".gitignore").read_text().splitlines()
                 if ln.strip().endswith("/")]
    on_disk = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
               and not any(fnmatch.fnmatch(p.name, g) for g in generated)}
    assert {"glossy", "glossy_cli", "models", "datasets", "conf", "scripts", "results", "tests"} <= on_disk
    assert on_disk <= listed, on_disk - listed
    for folder in ("glossy_cli", "models", "datasets", "conf", "scripts", "results"):
        line = (REPO / folder / "README.md").read_text().strip()
        assert "\n" not in line and line.startswith(folder), folder
    for package in ("glossy", "tests"):
        assert (REPO / package / "__init__.py").read_text().startswith('"""'), package


@pytest.mark.slow  # basedpyright over the repository: ~20 s
def test_a_static_checker_resolves_every_import_of_glossys_own_code():
    exe = Path(sys.executable).parent / "basedpyright"
    if not exe.exists():
        pytest.skip("basedpyright is not installed (pip install -e '.[test]' brings it)")
    p = subprocess.run([str(exe), "--outputjson"], cwd=REPO, capture_output=True, text=True, timeout=600)
    report = json.loads(p.stdout)
    assert report["summary"]["filesAnalyzed"] > 60
    unresolved = [f"{d['file']}: {d['message'].splitlines()[0]}" for d in report["generalDiagnostics"]
                  if d.get("rule") in ("reportMissingImports", "reportMissingModuleSource", "reportImportCycles")
                  or "is not a known attribute of module" in d["message"]]
    assert not unresolved, "\n".join(unresolved)
