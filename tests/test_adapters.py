"""Models trained elsewhere: a factory's model and a pythae model through `glossy eval`, their densities against
the outside library's own formulas, and the `file` dataset (an .npz of one's own)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import glossy
from glossy.adapters import from_pythae, load_pythae
from glossy.errors import GlossyError
from glossy_datasets.base import DatasetError
from glossy_datasets.registry import load
from tests.helpers import REPO, glossy_in_process, run_glossy
from tests.tiny_factory import make

EVAL = ["eval.is_samples=20", "eval.jackknife=0", "eval.ba_iters=50", "eval.candidates=[test,train]"]


def write_npz(path, n=(60, 20, 30), shape=(4, 4), seed=0, **extra):
    g = np.random.default_rng(seed)
    parts = {k: (g.random((m, *shape)) < 0.3).astype(np.float32) for k, m in zip(("train", "valid", "test"), n)}
    np.savez(path, **{**parts, **extra})
    return parts


# --- the file dataset ------------------------------------------------------------------------------------------
def test_the_file_dataset_reads_an_npz_and_infers_binary(tmp_path):
    parts = write_npz(tmp_path / "d.npz")
    s = load("file", path=str(tmp_path / "d.npz"))
    assert s.meta.input_type == "binary" and s.meta.shape == (1, 4, 4) and s.sizes() == {"train": 60, "val": 20,
                                                                                          "test": 30}
    np.testing.assert_array_equal(s.test[:, 0].numpy(), parts["test"])


@pytest.mark.parametrize("case,words", [
    ("missing key", "no valid / val / validation array"), ("out of range", "outside [0, 1]"),
    ("gray unsaid", "input_type=gray"), ("shapes differ", "different shapes"), ("not npz", "not a readable .npz"),
    ("said binary", "said to be binary"), ("no path", "dataset.options.path")])
def test_a_malformed_npz_is_one_clear_error(tmp_path, case, words):
    f, opts = tmp_path / "d.npz", {}
    g = np.random.default_rng(1)
    if case == "missing key":
        np.savez(f, train=np.zeros((3, 2, 2)), test=np.zeros((3, 2, 2)))
    elif case == "out of range":
        np.savez(f, train=np.full((3, 2, 2), 2.0), valid=np.zeros((3, 2, 2)), test=np.zeros((3, 2, 2)))
    elif case in ("gray unsaid", "said binary"):
        np.savez(f, train=g.random((3, 2, 2)), valid=g.random((3, 2, 2)), test=g.random((3, 2, 2)))
        opts = {"input_type": "binary"} if case == "said binary" else {}
    elif case == "shapes differ":
        np.savez(f, train=np.zeros((3, 2, 2)), valid=np.zeros((3, 2, 3)), test=np.zeros((3, 2, 2)))
    elif case == "not npz":
        f.write_text("not an npz")
    with pytest.raises(DatasetError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load("file", path="" if case == "no path" else str(f), **opts)


# --- a factory's model ----------------------------------------------------------------------------------------
def test_a_factory_model_is_evaluated_from_the_command_line_as_the_library_evaluates_it(tmp_path):
    write_npz(tmp_path / "d.npz")
    torch.manual_seed(3)
    model = make()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    args = ["eval", "factory=tests.tiny_factory:make", f"checkpoint={tmp_path / 'w.pt'}", "dataset=file",
            f"dataset.options.path={tmp_path / 'd.npz'}", f"runs_root={tmp_path / 'runs'}", *EVAL]
    run_glossy(args, cwd=REPO, check=True)
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("factory-make-w-file-")  # the factory, the weights file, the dataset
    r = json.loads((run / "result.json").read_text())
    assert r["source"]["factory"] == "tests.tiny_factory:make" and r["model"] == "factory-make" and r["seed"] is None
    # the same numbers as the library call on the same model, data and settings
    s = load("file", path=str(tmp_path / "d.npz"))
    lib = glossy.evaluate(model, s.test, glossy.EvalSettings(**r["eval_config"]), train_x=s.train, valid_x=s.val,
                          show_progress=False)
    for k in ("nll", "glossy_max", "glossy_max_train", "nll_ba"):
        assert r[k] == pytest.approx(lib[k], abs=1e-6), k
    assert not any((tmp_path / "w.pt").parent.glob("*.json"))  # nothing written beside the user's weights


@pytest.mark.parametrize("factory,weights,words", [
    ("tests.tiny_factory:not_a_model", "w.pt", "not a glossy.LatentVariableModel"),
    ("tests.no_such_module:make", "w.pt", "cannot import tests.no_such_module"),
    ("tests.tiny_factory:missing", "w.pt", "has no missing"),
    ("tests.tiny_factory:make", "other.pt", "does not load into the model"),
    ("tiny_factory", "w.pt", "expected package.module:function")])
def test_a_factory_that_cannot_give_a_model_is_one_line_and_exit_2_with_nothing_written(tmp_path, factory, weights,
                                                                                         words, capsys, monkeypatch):
    write_npz(tmp_path / "d.npz")
    torch.save(make().state_dict(), tmp_path / "w.pt")
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pt")
    code, _, err = glossy_in_process(["eval", f"factory={factory}", f"checkpoint={tmp_path / weights}", "dataset=file",
                                      f"dataset.options.path={tmp_path / 'd.npz'}", f"runs_root={tmp_path / 'runs'}"],
                                     capsys, monkeypatch, REPO)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --- pythae ---------------------------------------------------------------------------------------------------
pythae = pytest.importorskip("pythae")


def pythae_model(kind="VAE", loss="bce", shape=(1, 4, 4), seed=0):
    from pythae import models

    torch.manual_seed(seed)
    cfg = getattr(models, f"{kind}Config")(input_dim=shape, latent_dim=3, reconstruction_loss=loss,
                                            **({"number_components": 5} if kind == "VAMP" else {}))
    return getattr(models, kind)(cfg)


@pytest.mark.parametrize("kind", ["VAE", "VAMP", "IWAE", "BetaVAE"])
@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_a_pythae_models_densities_are_pythaes_own_normalised(kind, loss):
    net = pythae_model(kind, loss)
    m = from_pythae(net)
    x = torch.bernoulli(torch.full((7, 1, 4, 4), 0.4))
    z = torch.randn(5, 7, 3)
    with torch.no_grad():
        rec = net.decoder(z.reshape(-1, 3))["reconstruction"].reshape(5, 7, 16)
        xr = x.reshape(1, 7, 16).expand(5, 7, 16)
        if loss == "bce":  # pythae's get_nll: -binary_cross_entropy, summed
            want = -F.binary_cross_entropy(rec, xr, reduction="none").sum(-1)
        else:  # -mse / 2 - D/2 log 2 pi
            want = -0.5 * F.mse_loss(rec, xr, reduction="none").sum(-1) - 8 * np.log(2 * np.pi)
        np.testing.assert_allclose(m.log_likelihood(x, z).numpy(), want.numpy(), rtol=1e-5, atol=1e-4)
        # pythae leaves out the 2 pi of log p(z) (and of log q(z|x): they cancel); glossy's are normalised
        prior = net._log_p_z(z.reshape(-1, 3)).reshape(5, 7) if kind == "VAMP" else -0.5 * (z**2).sum(-1)
        np.testing.assert_allclose(m.log_prior(z).numpy(), (prior - 1.5 * np.log(2 * np.pi)).numpy(), rtol=1e-5,
                                   atol=1e-4)
        pairwise = m.log_likelihood_matrix(x, z[:, 0])  # [5 candidates, 7 images]
        np.testing.assert_allclose(pairwise.numpy(), m.log_likelihood(x, z[:, 0][:, None].expand(5, 7, 3)).numpy(),
                                   rtol=1e-5, atol=1e-3)


def test_a_pythae_folder_is_evaluated_into_runs_root_and_a_model_in_memory_by_the_library(tmp_path, capsys,
                                                                                         monkeypatch):
    net = pythae_model("VAMP")
    net.save(str(tmp_path / "model"))
    write_npz(tmp_path / "d.npz")
    args = ["eval", f"checkpoint={tmp_path / 'model'}", "dataset=file", f"dataset.options.path={tmp_path / 'd.npz'}",
            f"runs_root={tmp_path / 'runs'}", *EVAL]
    run_glossy(args, cwd=tmp_path, check=True)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(["model_config.json", "model.pt",
                                                                              "environment.json"])
    (run,) = (tmp_path / "runs").iterdir()
    r = json.loads((run / "result.json").read_text())
    assert (r["model"], r["prior"], r["source"]["library"], r["source"]["likelihood"]) == \
        ("pythae-vamp", "vamp", "pythae", "Bernoulli (pythae's bce)")
    s = load("file", path=str(tmp_path / "d.npz"))
    lib = glossy.evaluate(net, s.test, glossy.EvalSettings(**r["eval_config"]), train_x=s.train, valid_x=s.val,
                          show_progress=False)  # the pythae object itself
    assert lib["nll"] == pytest.approx(r["nll"], abs=1e-6)
    code, _, err = glossy_in_process([*args, "eval.is_samples=21"], capsys, monkeypatch, tmp_path)  # again
    assert code == 0 and len(list((tmp_path / "runs").iterdir())) == 1, err  # the same run directory


def test_pythae_refusals_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    write_npz(tmp_path / "d.npz")
    data = ["dataset=file", f"dataset.options.path={tmp_path / 'd.npz'}", f"runs_root={tmp_path / 'runs'}"]
    pythae_model().save(str(tmp_path / "ok"))
    pythae_model(shape=(1, 5, 5)).save(str(tmp_path / "wide"))
    from pythae.models import RHVAE, RHVAEConfig

    RHVAE(RHVAEConfig(input_dim=(1, 4, 4), latent_dim=2)).save(str(tmp_path / "rhvae"))
    custom = pythae_model()
    from pythae.models.nn.default_architectures import Encoder_VAE_MLP

    custom.set_encoder(Encoder_VAE_MLP(custom.model_config))
    custom.model_config.uses_default_encoder = False
    custom.save(str(tmp_path / "custom"))
    cases = [(["checkpoint=" + str(tmp_path / "ok")], "dataset=<name>", []),
             ([f"checkpoint={tmp_path / 'wide'}"], "takes images of shape [1, 5, 5]", data),
             ([f"checkpoint={tmp_path / 'rhvae'}"], "holds a pythae RHVAE model", data),
             ([f"checkpoint={tmp_path / 'custom'}"], "trust_pickles=true", data)]
    for args, words, more in cases:
        code, _, err = glossy_in_process(["eval", *args, *more], capsys, monkeypatch, tmp_path)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # trusted, the custom network loads (its pickle is code: only on the explicit opt-in)
    assert load_pythae(tmp_path / "custom", trust_pickles=True).net.encoder is not None
    with pytest.raises(GlossyError, match="is not a pythae model folder"):
        load_pythae(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["VAE", "VAMP"])
def test_glossys_nll_of_a_pythae_model_is_pythaes_own_get_nll_within_monte_carlo_error(tmp_path, kind):
    # a model trained by pythae's own trainer for one epoch on real static MNIST, saved and loaded as pythae writes
    # folders; 300 test images at S = 100 (pythae's get_nll loops over the images one at a time)
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    from tests.test_datasets import SHARED

    if not (SHARED / "mnist" / "binarized_mnist_test.amat").is_file():
        if os.environ.get("GLOSSY_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"static MNIST is required (GLOSSY_REQUIRE_REAL_DATA=1) but not in {SHARED / 'mnist'}")
        pytest.skip(f"static MNIST not in {SHARED / 'mnist'}")
    splits = load("mnist", SHARED, download=False)
    torch.manual_seed(0)
    net = pythae_model(kind, shape=(1, 28, 28))
    cfg = BaseTrainerConfig(output_dir=str(tmp_path), num_epochs=1, learning_rate=1e-3, per_device_train_batch_size=100,
                            no_cuda=True, steps_saving=None)
    TrainingPipeline(training_config=cfg, model=net)(train_data=splits.train[:3000].numpy(),
                                                     eval_data=splits.val[:500].numpy())
    m = load_pythae(next(tmp_path.glob("*_training_*/final_model")))
    x, s = splits.test[:300], 100
    torch.manual_seed(0)
    with torch.no_grad():
        theirs = -float(m.net.get_nll(x, n_samples=s, batch_size=100))
    runs = []
    for seed in (1, 2):
        keep: dict = {}
        glossy.evaluate(m, x, is_samples=s, seed=seed, keep=keep, show_progress=False)
        runs.append(-keep["log_px"].double())
    ours = float(runs[0].mean())
    # two independent estimates per image: the sd of their mean difference is that of glossy's minus pythae's
    sd = float((runs[0] - runs[1]).std()) / len(x) ** 0.5
    assert abs(ours - theirs) <= 4 * sd, (ours, theirs, sd)
    assert abs(float(runs[1].mean()) - theirs) <= 4 * sd


def test_without_pythae_a_pythae_folder_is_one_error_naming_the_install(tmp_path, monkeypatch):
    import sys

    pythae_model().save(str(tmp_path / "m"))
    monkeypatch.setitem(sys.modules, "pythae.models", None)  # as if pythae were not installed
    with pytest.raises(GlossyError, match=r'pythae, which is not installed here .*pip install -e "\.\[pythae\]"'):
        load_pythae(tmp_path / "m")


def test_eval_help_needs_no_checkpoint_and_names_the_outside_model_settings(tmp_path):
    p = run_glossy(["eval", "--help"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for key in ("checkpoint: str", "factory: str or null", "trust_pickles: bool", "dataset: any", "runs_root: str"):
        assert key in p.stdout, key
