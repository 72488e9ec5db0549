"""A model of one's own for `glossy eval factory=tests.tiny_factory:make checkpoint=<weights>` (tests/test_adapters.py):
a small Bernoulli VAE on 4x4 images built from glossy's zoo, as any PyTorch code could return it."""

from glossy_models.registry import build


def make():
    return build("vae", "standard", (1, 4, 4), "binary", z_dim=2, hidden=8)


def not_a_model():
    return "a string"
