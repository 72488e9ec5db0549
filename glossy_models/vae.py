"""One-stochastic-layer VAE of the VampPrior reference: gated dense encoder and decoder, 300 units."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import LatentVariableModel, reparameterize_given
from .layers import Clamped, GatedDense, he_init
from .likelihoods import make_head


class VAE(LatentVariableModel):
    def __init__(self, input_shape, input_type: str, prior_factory, z_dim: int, hidden: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.input_type = input_type
        self.latent_dim = z_dim
        d = math.prod(self.input_shape)
        # encoder q(z|x)
        self.q_z_layers = nn.Sequential(GatedDense(d, hidden), GatedDense(hidden, hidden))
        self.q_z_mean = nn.Linear(hidden, z_dim)
        self.q_z_logvar = Clamped(hidden, z_dim, -6.0, 2.0)
        # decoder p(x|z)
        self.p_x_layers = nn.Sequential(GatedDense(z_dim, hidden), GatedDense(hidden, hidden))
        self.p_x = make_head(input_type, hidden, d)
        he_init(self)
        self.prior = prior_factory(dim=z_dim, encoder=self.q_z, input_shape=self.input_shape)

    def q_z(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.q_z_layers(x.flatten(-3))
        return self.q_z_mean(h), self.q_z_logvar(h)

    def decode(self, z: torch.Tensor):
        return self.p_x(self.p_x_layers(z))

    def posterior_noise_dims(self):
        return (self.latent_dim,)

    def sample_posterior_given(self, x, eps):
        mean, logvar = self.q_z(x)
        return reparameterize_given(mean, logvar, eps[0])

    def log_prior(self, z):
        return self.prior.log_prob(z)

    def log_likelihood(self, x, z):
        return self.decode(z).log_prob(x.flatten(-3))

    def posterior_mean(self, x):
        return self.q_z(x)[0]

    def log_likelihood_matrix(self, x, z):
        return self.decode(z).log_prob_pairwise(x.flatten(-3))

    def sample_prior(self, n):
        return self.prior.sample(n)

    def generate(self, z):
        return self.decode(z).mean.view(-1, *self.input_shape)
