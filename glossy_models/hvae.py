"""Two-level hierarchical VAE of the VampPrior reference: q(z2|x) q(z1|x,z2), p(z1|z2) p(z2), p(x|z1,z2).

The latent of the glossy statistics is z = (z1, z2), stored as the concatenation [..., z1 | z2].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import LatentVariableModel, reparameterize, reparameterize_given
from .layers import Clamped, GatedDense, he_init
from .likelihoods import make_head
from .priors import log_normal_diag


class TwoLevelMixin:
    """The latent bookkeeping shared by HVAE and PixelHVAE."""

    z1_dim: int
    z2_dim: int

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[..., : self.z1_dim], z[..., self.z1_dim :]

    def p_z1(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.p_z1_layers(z2)
        return self.p_z1_mean(h), self.p_z1_logvar(h)

    def log_prior(self, z):
        z1, z2 = self.split(z)
        mean, logvar = self.p_z1(z2)
        return log_normal_diag(z1, mean, logvar) + self.prior.log_prob(z2)

    def posterior_noise_dims(self):
        return (self.z2_dim, self.z1_dim)  # z2's draws, then z1's (no other draw comes between them)

    def sample_posterior_given(self, x, eps):
        e2, e1 = eps  # [n, B, z2], [n, B, z1]
        m2, lv2 = self.q_z2(x)
        z2, lq2 = reparameterize_given(m2, lv2, e2)
        hx = self.q_z1_x(x)  # the x-part of q(z1|x, z2), once per data point
        m1, lv1 = self.q_z1(hx.expand(e2.shape[0], *hx.shape), z2)
        z1, lq1 = reparameterize_given(m1, lv1, e1)
        return torch.cat([z1, z2], -1), lq1 + lq2

    def posterior_mean(self, x):
        m2, _ = self.q_z2(x)
        m1, _ = self.q_z1(self.q_z1_x(x), m2)
        return torch.cat([m1, m2], -1)

    def sample_prior(self, n):
        z2 = self.prior.sample(n)
        m1, lv1 = self.p_z1(z2)
        z1, _ = reparameterize(m1, lv1)
        return torch.cat([z1, z2], -1)

    def _p_z1_layers(self, z2_dim: int, z1_dim: int, hidden: int) -> None:
        self.p_z1_layers = nn.Sequential(GatedDense(z2_dim, hidden), GatedDense(hidden, hidden))
        self.p_z1_mean = nn.Linear(hidden, z1_dim)
        self.p_z1_logvar = Clamped(hidden, z1_dim, -6.0, 2.0)


class HVAE(TwoLevelMixin, LatentVariableModel):
    def __init__(self, input_shape, input_type: str, prior_factory, z_dim: int, hidden: int):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.input_type = input_type
        self.z1_dim = self.z2_dim = z_dim
        self.latent_dim = 2 * z_dim
        d = math.prod(self.input_shape)
        # q(z2 | x)
        self.q_z2_layers = nn.Sequential(GatedDense(d, hidden), GatedDense(hidden, hidden))
        self.q_z2_mean = nn.Linear(hidden, z_dim)
        self.q_z2_logvar = Clamped(hidden, z_dim, -6.0, 2.0)
        # q(z1 | x, z2)
        self.q_z1_layers_x = GatedDense(d, hidden)
        self.q_z1_layers_z2 = GatedDense(z_dim, hidden)
        self.q_z1_layers_joint = GatedDense(2 * hidden, hidden)
        self.q_z1_mean = nn.Linear(hidden, z_dim)
        self.q_z1_logvar = Clamped(hidden, z_dim, -6.0, 2.0)
        # p(z1 | z2)
        self._p_z1_layers(z_dim, z_dim, hidden)
        # p(x | z1, z2)
        self.p_x_layers_z1 = GatedDense(z_dim, hidden)
        self.p_x_layers_z2 = GatedDense(z_dim, hidden)
        self.p_x_layers_joint = GatedDense(2 * hidden, hidden)
        self.p_x = make_head(input_type, hidden, d)
        he_init(self)
        self.prior = prior_factory(dim=z_dim, encoder=self.q_z2, input_shape=self.input_shape)

    def q_z2(self, x):
        h = self.q_z2_layers(x.flatten(-3))
        return self.q_z2_mean(h), self.q_z2_logvar(h)

    def q_z1_x(self, x):
        return self.q_z1_layers_x(x.flatten(-3))

    def q_z1(self, hx, z2):
        h = self.q_z1_layers_joint(torch.cat([hx, self.q_z1_layers_z2(z2)], -1))
        return self.q_z1_mean(h), self.q_z1_logvar(h)

    def decode(self, z):
        z1, z2 = self.split(z)
        h = torch.cat([self.p_x_layers_z1(z1), self.p_x_layers_z2(z2)], -1)
        return self.p_x(self.p_x_layers_joint(h))

    def log_likelihood(self, x, z):
        return self.decode(z).log_prob(x.flatten(-3))

    def log_likelihood_matrix(self, x, z):
        return self.decode(z).log_prob_pairwise(x.flatten(-3))

    def generate(self, z):
        return self.decode(z).mean.view(-1, *self.input_shape)
