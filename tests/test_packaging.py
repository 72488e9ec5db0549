"""The top-level folders models/ and datasets/ install under namespaced names and shadow nothing."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_namespaced_packages_resolve_to_this_repository():
    import glossy_datasets
    import glossy_models

    import glossy_cli

    assert Path(glossy_datasets.__file__).resolve().parent == REPO / "datasets"
    assert Path(glossy_models.__file__).resolve().parent == REPO / "models"
    assert Path(glossy_cli.__file__).resolve().parent == REPO / "glossy_cli"


def test_installing_glossy_does_not_provide_or_shadow_datasets_or_models(monkeypatch):
    # the repository root itself is on sys.path only when running from it (python -m pytest); the
    # question is what the *installed* environment provides
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != REPO])
    for name in ("datasets", "models"):
        sys.modules.pop(name, None)
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue  # nothing called `datasets` here: glossy did not create one
        origin = Path(spec.origin or next(iter(spec.submodule_search_locations or []), "")).resolve()
        assert REPO not in origin.parents and origin != REPO, (
            f"`import {name}` resolves to glossy's folder {origin}; it must not shadow other packages")


def test_config_groups_are_packaged():
    import glossy_conf

    root = Path(glossy_conf.__file__).parent
    for group in ("dataset", "model", "prior", "train", "eval"):
        assert list((root / group).glob("*.yaml")), group
