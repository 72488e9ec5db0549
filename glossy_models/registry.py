"""glossy's model zoo: VAE, HVAE and PixelHVAE with a standard or VampPrior prior; one `build`.

Importing this module costs no torch: the names and the architecture defaults are here, the classes are
imported when first used (`build`, or the attributes MODELS, PRIORS, VAE, ... through the module's __getattr__),
so that the command line can check a configuration and print its help without loading torch."""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from .architecture import ARCHITECTURE_KEYS, PIXELCNN_DEFAULTS

if TYPE_CHECKING:  # the lazy names, eagerly, for type checkers
    from .base import LatentVariableModel
    from .hvae import HVAE
    from .pixelhvae import PixelHVAE
    from .priors import PRIORS, StandardNormal, VampPrior
    from .vae import VAE

    MODELS: dict[str, type[LatentVariableModel]] = {"vae": VAE, "hvae": HVAE, "pixelhvae": PixelHVAE}

MODEL_NAMES = ("vae", "hvae", "pixelhvae")
PRIOR_NAMES = ("standard", "vamp")

_LAZY = {"VAE": (".vae", "VAE"), "HVAE": (".hvae", "HVAE"), "PixelHVAE": (".pixelhvae", "PixelHVAE"),
         "LatentVariableModel": (".base", "LatentVariableModel"), "PRIORS": (".priors", "PRIORS"),
         "StandardNormal": (".priors", "StandardNormal"), "VampPrior": (".priors", "VampPrior")}

__all__ = ["ARCHITECTURE_KEYS", "HVAE", "MODELS", "MODEL_NAMES", "PIXELCNN_DEFAULTS", "PRIORS", "PRIOR_NAMES",
           "LatentVariableModel", "PixelHVAE", "StandardNormal", "VAE", "VampPrior", "build"]


def __getattr__(name: str):
    if name == "MODELS":  # name -> class
        return {"vae": __getattr__("VAE"), "hvae": __getattr__("HVAE"), "pixelhvae": __getattr__("PixelHVAE")}
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module, __package__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(model: str, prior: str, input_shape, input_type: str, *, z_dim: int = 40, hidden: int = 300,
          n_components: int = 500, pseudo_init_mean: float = 0.05, pseudo_init_std: float = 0.01,
          channels: int | None = None, n_layers: int | None = None) -> LatentVariableModel:
    """The one factory: a model class by name with a prior by name, for images of `input_shape`.
    channels, n_layers: the PixelHVAE's PixelCNN (None: its constructor's defaults); other models have none."""
    if model not in MODEL_NAMES:
        raise KeyError(f"unknown model {model!r}; valid: {', '.join(MODEL_NAMES)}")
    given = {k: v for k, v in (("channels", channels), ("n_layers", n_layers)) if v is not None}
    if unknown := sorted(set(given) - set(ARCHITECTURE_KEYS.get(model, ()))):
        raise TypeError(f"model {model!r} has no {', '.join(unknown)}")
    if prior not in PRIOR_NAMES:
        raise KeyError(f"unknown prior {prior!r}; valid: {', '.join(PRIOR_NAMES)}")
    from .priors import StandardNormal, VampPrior

    if prior == "vamp":
        factory = functools.partial(VampPrior, n_components=n_components, init_mean=pseudo_init_mean,
                                    init_std=pseudo_init_std)
    else:
        def factory(dim: int, encoder, input_shape) -> StandardNormal:  # N(0, I) needs neither
            return StandardNormal(dim)
    return __getattr__("MODELS")[model](tuple(input_shape), input_type, factory, z_dim=z_dim, hidden=hidden, **given)
