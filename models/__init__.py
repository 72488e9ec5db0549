"""glossy's model zoo: VAE, HVAE and PixelHVAE with a standard or VampPrior prior; one `build`."""

from __future__ import annotations

import functools

from .base import LatentVariableModel
from .hvae import HVAE
from .pixelhvae import PixelHVAE
from .priors import PRIORS, StandardNormal, VampPrior
from .vae import VAE

MODELS: dict[str, type[LatentVariableModel]] = {"vae": VAE, "hvae": HVAE, "pixelhvae": PixelHVAE}

__all__ = ["MODELS", "PRIORS", "LatentVariableModel", "VAE", "HVAE", "PixelHVAE", "StandardNormal",
           "VampPrior", "build"]


def build(model: str, prior: str, input_shape, input_type: str, *, z_dim: int = 40, hidden: int = 300,
          n_components: int = 500, pseudo_init_mean: float = 0.05, pseudo_init_std: float = 0.01,
          ) -> LatentVariableModel:
    """The one factory: a model class by name with a prior by name, for images of `input_shape`."""
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    if prior not in PRIORS:
        raise KeyError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
    if prior == "vamp":
        factory = functools.partial(VampPrior, n_components=n_components, init_mean=pseudo_init_mean,
                                    init_std=pseudo_init_std)
    else:
        factory = StandardNormal
    return MODELS[model](tuple(input_shape), input_type, factory, z_dim=z_dim, hidden=hidden)
