"""Models trained elsewhere, as `glossy_models.base.LatentVariableModel`s that `glossy.evaluate` takes like its own:

    from_pythae(model)            a pythae VAE, BetaVAE, IWAE or VAMP model object (pythae's networks, default or
                                  custom, run as they are)
    load_pythae(folder, ...)      the same from the folder pythae's trainer writes (model_config.json, model.pt,
                                  and encoder.pkl / decoder.pkl for custom networks)
    from_factory("pkg.mod:fn", weights)   whatever a function of yours returns, with a state dict loaded into it

The likelihood is the normalised density that pythae's own `get_nll` assumes: `bce` a Bernoulli over the pixels
(its log-probabilities clamped at -100 as torch's binary cross-entropy clamps them), `mse` a unit-variance
Gaussian. The prior: N(0, I), or for VAMP the mixture of the encoder's posteriors at the pseudo-inputs, each
density normalised (pythae drops the 2 pi terms of log p(z) and log q(z|x), which cancel in its own estimate).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

from glossy_models.base import LatentVariableModel, reparameterize_given
from glossy_models.likelihoods import Bernoulli, UnitGaussian
from glossy_models.priors import LOG_2PI, log_standard_normal

from .errors import GlossyError

# pythae's config class name -> (its model class, glossy's name of its prior)
PYTHAE_MODELS = {"VAEConfig": ("VAE", "standard"), "BetaVAEConfig": ("BetaVAE", "standard"),
                 "IWAEConfig": ("IWAE", "standard"), "VAMPConfig": ("VAMP", "vamp")}
PYTHAE_INSTALL = 'pip install -e ".[pythae]"'
BCE_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps each log at -100
LIKELIHOOD_NAMES = {"bce": "Bernoulli (pythae's bce)", "mse": "unit-variance Gaussian (pythae's mse)"}


def _image_shape(input_dim) -> tuple[int, int, int]:
    """glossy's [C, H, W] for pythae's input_dim: (C, H, W), (H, W) or (D,)."""
    dims = tuple(int(d) for d in input_dim)
    return {3: dims, 2: (1, *dims), 1: (1, 1, *dims)}.get(len(dims), (1, 1, math.prod(dims)))  # type: ignore[return-value]


class PythaeVampPrior(nn.Module):
    """pythae VAMP's prior: the uniform mixture of q(z|u_c) at its pseudo-inputs u_c, normalised."""

    def __init__(self, net) -> None:
        super().__init__()
        self.net = [net]  # a list: the adapter's own submodule already holds the network
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is not None:
            return self._cached
        net = self.net[0]
        c = net.number_components
        eye = torch.eye(c, device=next(net.parameters()).device)
        out = net.encoder(net.pseudo_inputs(eye).reshape(c, *net.model_config.input_dim))
        return out.embedding, out.log_covariance

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) [...] for z [..., k]: the quadratic forms of all components as two matrix products."""
        mean, logvar = self.components()  # [C, k]
        prec = torch.exp(-logvar)
        const = -0.5 * (LOG_2PI * mean.shape[1] + logvar.sum(1) + (mean * mean * prec).sum(1))  # [C]
        quad = (z * z) @ prec.T * -0.5 + z @ (mean * prec).T  # [..., C]
        return torch.logsumexp(quad + const, -1) - math.log(mean.shape[0])

    def sample(self, n: int) -> torch.Tensor:
        mean, logvar = self.components()
        pick = torch.randint(0, mean.shape[0], (n,), device=mean.device)
        return mean[pick] + torch.randn_like(mean[pick]) * torch.exp(0.5 * logvar[pick])

    @contextlib.contextmanager
    def frozen(self):
        """Evaluation: the components computed once."""
        self._cached = None
        self._cached = self.components()
        try:
            yield self
        finally:
            self._cached = None


class PythaeModel(LatentVariableModel):
    """A pythae VAE / BetaVAE / IWAE / VAMP model (`net`) with normalised densities (module docstring)."""

    def __init__(self, net) -> None:
        super().__init__()
        cfg = net.model_config
        self.net = net
        self.kind = type(net).__name__
        self.pythae_input_dim = tuple(int(d) for d in cfg.input_dim)
        self.input_shape = _image_shape(cfg.input_dim)
        self.latent_dim = int(cfg.latent_dim)
        self.reconstruction_loss = cfg.reconstruction_loss
        self.input_type = "binary" if self.reconstruction_loss == "bce" else "continuous"
        self.prior_name = "vamp" if self.kind == "VAMP" else "standard"
        self.prior = PythaeVampPrior(net) if self.kind == "VAMP" else None

    def describe(self) -> dict:
        """What result.json says of the model: where it came from and the densities glossy gave it."""
        return {"library": "pythae", "model": self.kind, "reconstruction_loss": self.reconstruction_loss,
                "likelihood": LIKELIHOOD_NAMES[self.reconstruction_loss], "prior": self.prior_name,
                "latent_dim": self.latent_dim, "input_dim": list(self.pythae_input_dim),
                "default_encoder": bool(self.net.model_config.uses_default_encoder),
                "default_decoder": bool(self.net.model_config.uses_default_decoder)}

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = x.shape[:-3]
        out = self.net.encoder(x.reshape(-1, *self.pythae_input_dim))
        return out.embedding.reshape(*lead, -1), out.log_covariance.reshape(*lead, -1)

    def decode(self, z: torch.Tensor):
        """The likelihood l(x|z) over flat images [..., D] for z [..., k]."""
        rec = self.net.decoder(z.reshape(-1, self.latent_dim))["reconstruction"].reshape(*z.shape[:-1], -1)
        if self.reconstruction_loss == "mse":
            return UnitGaussian(rec)
        # the Bernoulli with pythae's clamped logs: x log p + (1 - x) log(1 - p) = x (lp - lq) + lq
        lp = torch.log(rec).clamp_(min=BCE_LOG_MIN)
        lq = torch.log1p(-rec).clamp_(min=BCE_LOG_MIN)
        return Bernoulli(lp - lq)

    def posterior_noise_dims(self):
        return (self.latent_dim,)

    def sample_posterior_given(self, x, eps):
        mean, logvar = self._encode(x)
        return reparameterize_given(mean, logvar, eps[0])

    def log_prior(self, z):
        return self.prior.log_prob(z) if self.prior is not None else log_standard_normal(z)

    def log_likelihood(self, x, z):
        return self.decode(z).log_prob(x.flatten(-3))

    def posterior_mean(self, x):
        return self._encode(x)[0]

    def log_likelihood_matrix(self, x, z):
        return self.decode(z).log_prob_pairwise(x.flatten(-3))

    def sample_prior(self, n):
        if self.prior is not None:
            return self.prior.sample(n)
        return torch.randn(n, self.latent_dim, device=next(self.parameters()).device)

    def generate(self, z):
        return self.decode(z).mean.reshape(-1, *self.input_shape)

    def decoder_modules(self):
        return list(self.net.decoder.modules())


def _pythae():
    try:
        return importlib.import_module("pythae.models")
    except ImportError as e:
        raise GlossyError(f"evaluating a pythae model needs pythae, which is not installed here ({e}): "
                          f"{PYTHAE_INSTALL}") from e


def is_pythae_model(obj) -> bool:
    return type(obj).__module__.startswith("pythae.")


def from_pythae(net) -> PythaeModel:
    """A pythae model object (already in memory) as a LatentVariableModel."""
    cfg_name = type(net.model_config).__name__
    if cfg_name not in PYTHAE_MODELS:
        raise GlossyError(f"pythae's {type(net).__name__} is not a model glossy evaluates; it evaluates "
                          f"{', '.join(m for m, _ in PYTHAE_MODELS.values())}")
    return PythaeModel(net).eval()


def is_pythae_folder(path: str | Path) -> bool:
    p = Path(str(path)).expanduser()
    return p.is_dir() and (p / "model_config.json").is_file()


def load_pythae(folder: str | Path, trust_pickles: bool = False) -> PythaeModel:
    """The pythae model in `folder` (as pythae's trainer or `model.save` writes it). Its weights load as tensors
    only (torch.load with weights_only=True); custom networks are pickles that run code when loaded, so they
    load only with trust_pickles=True. Every problem is one GlossyError."""
    folder = Path(str(folder)).expanduser()
    cfg_path, weights = folder / "model_config.json", folder / "model.pt"
    if not cfg_path.is_file() or not weights.is_file():
        raise GlossyError(f"{folder} is not a pythae model folder: it needs model_config.json and model.pt, as "
                          f"pythae's trainer writes them")
    try:
        raw = json.loads(cfg_path.read_text())
        name = raw["name"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GlossyError(f"{cfg_path} is not a pythae model config ({type(e).__name__}: {e})") from e
    if name not in PYTHAE_MODELS:
        raise GlossyError(f"{folder} holds a pythae {name.removesuffix('Config')} model; glossy evaluates "
                          f"{', '.join(m for m, _ in PYTHAE_MODELS.values())}")
    models = _pythae()
    from pythae.models.auto_model import AutoConfig

    try:
        config = AutoConfig.from_json_file(str(cfg_path))
    except Exception as e:  # pydantic's validation of a hand-edited or foreign file
        raise GlossyError(f"{cfg_path} is not a valid pythae {name} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
    nets = _custom_networks(folder, raw, trust_pickles)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net = getattr(models, PYTHAE_MODELS[name][0])(config, **nets)
        net.load_state_dict(state["model_state_dict"])
    except Exception as e:  # a truncated or foreign model.pt, weights of another shape
        raise GlossyError(f"{weights} does not load into pythae's {PYTHAE_MODELS[name][0]} of {cfg_path.name} "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return from_pythae(net)


def _custom_networks(folder: Path, raw: dict, trust_pickles: bool) -> dict:
    """encoder= / decoder= for pythae's constructor: the pickled custom networks, only when trusted."""
    wanted = {part: folder / f"{part}.pkl" for part in ("encoder", "decoder")
              if not raw.get(f"uses_default_{part}", True)}
    if not wanted:
        return {}
    missing = [p.name for p in wanted.values() if not p.is_file()]
    if missing:
        raise GlossyError(f"{folder} says its model has custom networks but holds no {' or '.join(missing)}")
    if not trust_pickles:
        raise GlossyError(f"{folder} holds custom networks as pickles ({', '.join(p.name for p in wanted.values())}),"
                          f" which run code when loaded: if you trust this folder, add trust_pickles=true")
    import cloudpickle

    out = {}
    for part, path in wanted.items():
        try:
            with open(path, "rb") as f:
                out[part] = cloudpickle.load(f)
        except Exception as e:
            raise GlossyError(f"{path} could not be unpickled ({type(e).__name__}: {e})") from e
    return out


def from_factory(spec: str, weights: str | Path | None = None) -> LatentVariableModel:
    """The model that `package.module:function` returns (called with no arguments; the current directory is on
    the import path), with the state dict in `weights` loaded into it (tensors only: weights_only=True; a
    dict holding it under "state_dict" or "model_state_dict" is accepted too). A pythae model is adapted."""
    module, _, attr = str(spec).partition(":")
    if not module or not attr:
        raise GlossyError(f"factory={spec}: expected package.module:function")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise GlossyError(f"factory={spec}: cannot import {module} ({e})") from e
    except AttributeError as e:
        raise GlossyError(f"factory={spec}: {module} has no {attr}") from e
    try:
        model = fn()
    except Exception as e:
        raise GlossyError(f"factory={spec}: calling it failed ({type(e).__name__}: {e})") from e
    if is_pythae_model(model):
        model = from_pythae(model)
    if not isinstance(model, LatentVariableModel):
        raise GlossyError(f"factory={spec} returned a {type(model).__name__}, not a glossy.LatentVariableModel "
                          f"(docs/library.md: the methods it offers)")
    if weights is not None:
        _load_weights(model, Path(str(weights)).expanduser(), spec)
    return model.eval()


def _load_weights(model: nn.Module, path: Path, spec: str) -> None:
    if not path.is_file():
        raise GlossyError(f"weights {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict):
            state = state.get("state_dict", state.get("model_state_dict", state))
        model.load_state_dict(state)
    except Exception as e:
        raise GlossyError(f"{path} does not load into the model of {spec} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e
