"""glossy's model zoo: VAE, HVAE and PixelHVAE with a standard or VampPrior prior; one `build`."""

from __future__ import annotations

import functools

from .base import LatentVariableModel
from .hvae import HVAE
from .pixelhvae import PixelHVAE
from .priors import PRIORS, StandardNormal, VampPrior
from .vae import VAE

MODELS: dict[str, type[LatentVariableModel]] = {"vae": VAE, "hvae": HVAE, "pixelhvae": PixelHVAE}
# hyper-parameters that only some models have (keyword arguments of their constructors, defaults there)
ARCHITECTURE_KEYS: dict[str, tuple[str, ...]] = {"pixelhvae": ("channels", "n_layers")}

__all__ = ["ARCHITECTURE_KEYS", "MODELS", "PRIORS", "LatentVariableModel", "VAE", "HVAE", "PixelHVAE",
           "StandardNormal", "VampPrior", "build"]


def build(model: str, prior: str, input_shape, input_type: str, *, z_dim: int = 40, hidden: int = 300,
          n_components: int = 500, pseudo_init_mean: float = 0.05, pseudo_init_std: float = 0.01,
          channels: int | None = None, n_layers: int | None = None) -> LatentVariableModel:
    """The one factory: a model class by name with a prior by name, for images of `input_shape`.
    channels, n_layers: the PixelHVAE's PixelCNN (None: its constructor's defaults); other models have none."""
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    given = {k: v for k, v in (("channels", channels), ("n_layers", n_layers)) if v is not None}
    if unknown := sorted(set(given) - set(ARCHITECTURE_KEYS.get(model, ()))):
        raise TypeError(f"model {model!r} has no {', '.join(unknown)}")
    if prior not in PRIORS:
        raise KeyError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
    if prior == "vamp":
        factory = functools.partial(VampPrior, n_components=n_components, init_mean=pseudo_init_mean,
                                    init_std=pseudo_init_std)
    else:
        def factory(dim: int, encoder, input_shape) -> StandardNormal:  # N(0, I) needs neither
            return StandardNormal(dim)
    return MODELS[model](tuple(input_shape), input_type, factory, z_dim=z_dim, hidden=hidden, **given)
