"""glossy's model zoo: VAE, HVAE and PixelHVAE with a standard or VampPrior prior; one `build`.

Importing this module costs no torch: the names and the architecture defaults are here, the classes are
imported when first used (`build`, or the attributes MODELS, PRIORS, VAE, ... through the module's __getattr__),
so that the command line can check a configuration and print its help without loading torch."""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from .architecture import ARCHITECTURE_KEYS, PIXELCNN_DEFAULTS, PRIOR_DEFAULTS

if TYPE_CHECKING:  # the lazy names, eagerly, for type checkers
    from .base import LatentVariableModel
    from .hvae import HVAE
    from .pixelhvae import PixelHVAE
    from .priors import PRIORS, StandardNormal, VampPrior
    from .vae import VAE

    MODELS: dict[str, type[LatentVariableModel]]

# the one list of the zoo: model name -> (module, class); its classes are imported when first used
_MODELS = {"vae": (".vae", "VAE"), "hvae": (".hvae", "HVAE"), "pixelhvae": (".pixelhvae", "PixelHVAE")}
MODEL_NAMES = tuple(_MODELS)
PRIOR_NAMES = ("standard", "vamp")

_LAZY = {**{cls: (module, cls) for module, cls in _MODELS.values()},
         "LatentVariableModel": (".base", "LatentVariableModel"), "PRIORS": (".priors", "PRIORS"),
         "StandardNormal": (".priors", "StandardNormal"), "VampPrior": (".priors", "VampPrior")}

__all__ = ["ARCHITECTURE_KEYS", "HVAE", "MODELS", "MODEL_NAMES", "PIXELCNN_DEFAULTS", "PRIORS", "PRIOR_DEFAULTS",
           "PRIOR_NAMES", "LatentVariableModel", "PixelHVAE", "StandardNormal", "VAE", "VampPrior", "build"]


def __getattr__(name: str):
    if name == "MODELS":  # name -> class
        return {m: __getattr__(cls) for m, (_, cls) in _MODELS.items()}
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module, __package__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(model: str, prior: str, input_shape, input_type: str, *, z_dim: int = 40, hidden: int = 300,
          **options) -> LatentVariableModel:
    """The one factory: a model class by name with a prior by name, for images of `input_shape`.
    options: the prior's (PRIOR_DEFAULTS: n_components, pseudo_init_mean, pseudo_init_std; a standard prior
    ignores them) and the model's own architecture (ARCHITECTURE_KEYS: the PixelHVAE's PixelCNN channels and
    n_layers, its constructor's defaults where not given); any other is refused."""
    if model not in _MODELS:
        raise KeyError(f"unknown model {model!r}; valid: {', '.join(MODEL_NAMES)}")
    if prior not in PRIOR_NAMES:
        raise KeyError(f"unknown prior {prior!r}; valid: {', '.join(PRIOR_NAMES)}")
    arch = {k: v for k, v in options.items() if k not in PRIOR_DEFAULTS and v is not None}
    if unknown := sorted(set(arch) - set(ARCHITECTURE_KEYS.get(model, ()))):
        raise TypeError(f"model {model!r} has no {', '.join(unknown)}")
    from .priors import StandardNormal, VampPrior

    if prior == "vamp":
        p = {**PRIOR_DEFAULTS, **{k: v for k, v in options.items() if k in PRIOR_DEFAULTS}}
        factory = functools.partial(VampPrior, n_components=p["n_components"], init_mean=p["pseudo_init_mean"],
                                    init_std=p["pseudo_init_std"])
    else:
        def factory(dim: int, encoder, input_shape) -> StandardNormal:  # N(0, I) needs neither
            return StandardNormal(dim)
    return __getattr__(_MODELS[model][1])(tuple(input_shape), input_type, factory, z_dim=z_dim, hidden=hidden,
                                          **arch)
