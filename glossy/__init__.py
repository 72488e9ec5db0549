"""glossy: can this latent-variable model still be improved by a better prior, or a better likelihood?

The library. Its modules: `evaluation` (evaluate() and its context), its stages `importance` (NLL by importance
sampling), `candidates` (the candidates and their glossy matrices), `sandwiches` (the in-sample and held-out
Blahut-Arimoto priors), the pure maths `bounds` and `intervals`, and what they run on: `settings`
(EvalSettings), `memory` (the chunk plan), `storage`, `journal` (finished points kept), `progress`, `atomic`,
`errors`. The packages beside it:

    glossy_cli       the `glossy` command: dispatch, typed configuration, training runs on disk, table, figure
    glossy_models    layers, likelihoods, priors, VAE / HVAE / PixelHVAE, `registry.build`
    glossy_datasets  one loader per dataset (with its options), downloads + checksums, `registry.load`
    conf/            the Hydra configuration (YAML only; shipped as glossy_cli/conf)

What a researcher imports (resolved on first use, so `import glossy` stays light):

    glossy.evaluate(model, x, settings=None, **overrides)   NLL by importance sampling, log c(z), glossy
                                        statistics, bounds, sandwiches, intervals
    glossy.EvalSettings                 the evaluation's typed settings (eval.* of the configuration)
    glossy.bounds                       the pure tensor maths: log_c, glossy_stats, lower_bound, blahut_arimoto, ...
    glossy.intervals                    jackknife intervals on any matrix of log-likelihoods
    glossy.LatentVariableModel          the methods a model of your own offers to be evaluated
    glossy.build_model(model, prior, input_shape, input_type, ...)
    glossy.load_dataset(name, data_dir=None, ...)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from glossy import bounds, intervals
    from glossy.evaluation import evaluate
    from glossy.settings import EvalSettings
    from glossy_datasets.registry import load as load_dataset
    from glossy_models.base import LatentVariableModel
    from glossy_models.registry import build as build_model

_PUBLIC = {  # name -> (module, attribute or None for the module itself)
    "evaluate": ("glossy.evaluation", "evaluate"),
    "bounds": ("glossy.bounds", None),
    "intervals": ("glossy.intervals", None),
    "EvalSettings": ("glossy.settings", "EvalSettings"),
    "LatentVariableModel": ("glossy_models.base", "LatentVariableModel"),
    "build_model": ("glossy_models.registry", "build"),
    "load_dataset": ("glossy_datasets.registry", "load"),
}

__all__ = ["EvalSettings", "LatentVariableModel", "__version__", "bounds", "build_model", "evaluate", "intervals",
           "load_dataset"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'glossy' has no attribute {name!r}")
    module, attr = _PUBLIC[name]
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)
