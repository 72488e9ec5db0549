"""glossy: can this latent-variable model still be improved by a better prior, or a better likelihood?"""

__version__ = "0.1.0"
