"""Import name = folder name: glossy (the public face), glossy_cli, glossy_models, glossy_datasets. Python started
at the repository root or in an install loads each of glossy's files under one module name, every error class has
one identity, and no installed `datasets` or `models` package is hidden."""

import fnmatch
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import glossy
from tests.helpers import REPO

PACKAGES = ("glossy", "glossy_cli", "glossy_models", "glossy_datasets")

# run from the repository root: import every module of glossy's packages, then the names a user there might type;
# report each loaded file of the repository with the module names it was loaded as, and the error classes
IMPORT_ALL = r"""
import importlib, json, os, pkgutil, sys
root = os.getcwd()
names = []
for pkg in ("glossy", "glossy_cli", "glossy_models", "glossy_datasets"):
    names += [pkg] + [f"{pkg}.{m.name}" for m in pkgutil.iter_modules([os.path.join(root, pkg)])]
for n in names:
    importlib.import_module(n)
origins = {}
for n in sys.argv[1:]:
    try:
        origins[n] = getattr(importlib.import_module(n), "__file__", None)
    except ModuleNotFoundError:
        origins[n] = "absent"
ours = tuple(os.path.join(root, d) + os.sep for d in ("glossy", "glossy_cli", "glossy_models",
                                                      "glossy_datasets", "conf", "scripts", "tests"))
files, errors = {}, {}
for name, m in list(sys.modules.items()):
    f = getattr(m, "__file__", None)
    if f and os.path.realpath(f).startswith(ours):
        files.setdefault(os.path.realpath(f), []).append(name)
        for k, v in vars(m).items():
            if isinstance(v, type) and issubclass(v, BaseException) and v.__module__.startswith("glossy"):
                errors.setdefault(v.__qualname__, set()).add(id(v))
print(json.dumps({"files": files, "loaded": len(names), "origins": origins,
                  "errors": {k: len(v) for k, v in errors.items()}}))
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


def test_each_package_is_its_folder_and_the_public_face_resolves():
    for pkg in PACKAGES:
        mod = __import__(pkg)
        assert Path(mod.__file__).resolve() == REPO / pkg / "__init__.py", pkg
    assert not [p for p in REPO.rglob("*") if p.is_symlink() and ".venv" not in p.parts]  # no links
    from glossy.bounds import log_c
    from glossy.evaluation import evaluate

    assert glossy.evaluate is evaluate and glossy.bounds.log_c is log_c
    assert type(glossy.build_model("vae", "standard", (1, 4, 4), "binary", z_dim=2, hidden=3)).__name__ == "VAE"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = glossy.nope


def test_every_file_loads_under_one_name_and_every_error_class_has_one_identity():
    out = _from_repo_root("models", "datasets", "conf", "glossy.cli", "glossy.datasets")
    assert out["loaded"] > 30
    twice = {f: n for f, n in out["files"].items() if len(n) > 1}
    assert not twice, f"loaded under two names: {twice}"
    assert out["origins"] == {"models": "absent", "datasets": "absent", "conf": None, "glossy.cli": "absent",
                              "glossy.datasets": "absent"}  # conf/: YAML only, a namespace with no code
    assert {"GlossyError", "ConfigError", "DatasetError", "DatasetMissing", "DatasetCorrupt"} <= set(out["errors"])
    assert set(out["errors"].values()) == {1}, out["errors"]


@pytest.mark.slow  # a second interpreter importing torch
def test_an_installed_datasets_or_models_package_is_not_hidden_at_the_repository_root(tmp_path):
    for name in ("datasets", "models"):  # stand-ins for Hugging Face's `datasets` and any `models`
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("WHO = 'installed'\n")
    out = _from_repo_root("datasets", "models", pythonpath=tmp_path)
    for name in ("datasets", "models"):
        assert Path(out["origins"][name]).resolve() == (tmp_path / name / "__init__.py").resolve(), name


def test_config_groups_are_found_where_the_code_looks():
    from glossy_cli.schema import CONF_DIR

    for group in ("dataset", "model", "prior", "train", "eval", "experiment"):
        assert list((CONF_DIR / group).glob("*.yaml")), group


@pytest.mark.slow  # builds a wheel (an isolated build environment from the package index)
def test_the_wheel_holds_the_four_packages_with_their_data_and_nothing_else(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "warning" not in (p.stdout + p.stderr).lower().replace("warning: location", ""), p.stderr
    (wheel,) = tmp_path.glob("glossy_lvm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    # the distribution's own name ("glossy" on the public index is someone else's package); the import name and the
    # command stay glossy
    assert "\nName: glossy-lvm\n" in zipfile.ZipFile(wheel).read(meta).decode()
    assert "glossy = glossy_cli.main:main" in zipfile.ZipFile(wheel).read(meta.replace("METADATA",
                                                                                     "entry_points.txt")).decode()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == set(PACKAGES)
    for want in ("glossy/__init__.py", "glossy_cli/main.py", "glossy_models/vae.py", "glossy_datasets/mnist.py",
                 "glossy_cli/conf/train.yaml", "glossy_cli/conf/dataset/mnist.yaml", "glossy_cli/paper_table1.csv",
                 "glossy_cli/conf/hydra/launcher/glossy_slurm.yaml"):
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
    assert {*PACKAGES, "conf", "scripts", "results", "tests"} <= on_disk
    assert on_disk <= listed, on_disk - listed
    for folder in ("conf", "scripts", "results"):
        line = (REPO / folder / "README.md").read_text().strip()
        assert "\n" not in line and line.startswith(folder), folder
    for package in (*PACKAGES, "tests"):
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


def test_the_declared_dependencies_are_exactly_what_the_code_imports():
    """Every third-party module glossy's packages import is a declared dependency (an optional one in its extra),
    and every declared dependency is imported, but for the Hydra launcher plugin Hydra finds by itself and the two
    libraries pandas imports itself for the renderers glossy calls (to_markdown: tabulate; Styler.to_latex:
    jinja2), which the table tests exercise."""
    import ast
    import re

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dist = lambda spec: re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].lower()  # noqa: E731
    declared = {dist(d) for d in project["dependencies"]}
    extras = {dist(d) for deps in project["optional-dependencies"].values() for d in deps}
    to_dist = {"hydra": "hydra-core", "torch.utils.tensorboard": "tensorboard"}
    imported, optional = set(), set()
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    tb = name.startswith("torch.utils.tensorboard")
                    top = "torch.utils.tensorboard" if tb else name.split(".")[0]
                    if top in sys.stdlib_module_names or top in (*PACKAGES, "__future__"):
                        continue
                    d = to_dist.get(top, top)
                    # an import inside a try whose ImportError becomes a message is optional (an extra)
                    (optional if d in extras and d not in declared else imported).add(d)
    used_by_others = {"hydra-joblib-launcher", "tabulate", "jinja2"}
    assert imported == declared - used_by_others, imported ^ (declared - used_by_others)
    assert optional <= extras and {"tensorboard", "mlflow"} <= optional


def test_every_function_is_short_and_takes_few_parameters():
    """The house's limits (docs/architecture.md): no function of the four packages over 60 lines or taking more
    than 8 parameters (positional and keyword-only, not self/cls, *args, **kwargs); a settings object or a context
    is the usual cure. main.py stays dispatch (at most 250 lines); no script over 300 lines."""
    import ast

    over = []
    for package in PACKAGES:
        for f in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    a = node.args
                    params = [p for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60 or len(params) > 8:
                        over.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines, "
                                    f"{len(params)} parameters")
    assert not over, "\n".join(over)
    assert len((REPO / "glossy_cli" / "main.py").read_text().splitlines()) <= 250
    long = [p.name for p in (REPO / "scripts").iterdir() if p.is_file() and len(p.read_text().splitlines()) > 300]
    assert not long, long


def test_the_evaluation_is_the_librarys_own():
    import glossy

    assert glossy.evaluate.__module__ == "glossy.evaluation" and glossy.EvalSettings.__module__ == "glossy.settings"
    assert glossy.bounds.__name__ == "glossy.bounds" and glossy.intervals.__name__ == "glossy.intervals"
    for package in ("glossy_models", "glossy_datasets"):  # the zoo and the loaders never import the library
        for f in (REPO / package).rglob("*.py"):
            assert not re.search(r"^\s*(from|import) glossy(_cli)?\b", f.read_text(), re.M), f
