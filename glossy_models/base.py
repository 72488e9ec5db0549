"""The interface every latent-variable model offers to training, importance sampling and the glossy matrix."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .priors import LOG_2PI


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, n: int | None = None):
    """z = mean + eps * std and log q(z) (normalised), with n leading samples when n is given."""
    shape = mean.shape if n is None else (n, *mean.shape)
    return reparameterize_given(mean, logvar, torch.randn(shape, device=mean.device, dtype=mean.dtype))


def reparameterize_given(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor):
    """z = mean + eps * std and log q(z) (normalised) for given standard-normal draws eps (broadcast)."""
    z = mean + eps * torch.exp(0.5 * logvar)
    log_q = -0.5 * (LOG_2PI + logvar + eps**2).sum(-1)
    return z, log_q


class LatentVariableModel(nn.Module):
    """A model (p(z), l(x|z)) with an encoder q(z|x). z is always a flat tensor [..., latent_dim];
    two-level models concatenate (z1, z2). Images x are [B, C, H, W]."""

    input_shape: tuple[int, ...]
    input_type: str = "continuous"
    latent_dim: int
    autoregressive: bool = False

    # --- what subclasses implement -------------------------------------------------------------
    def sample_posterior(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z [n, B, latent_dim] ~ q(z|x) and log q(z|x) [n, B]. By default: the noise that
        `posterior_noise_dims` declares, drawn in that order, through `sample_posterior_given`; a model that
        declares none implements this instead."""
        if self.posterior_noise_dims() is None:
            raise NotImplementedError
        return self.sample_posterior_given(x, self.posterior_noise(x, n))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) [...] for z [..., latent_dim]."""
        raise NotImplementedError

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log l(x|z) [n, B] for x [B, C, H, W] and z [n, B, latent_dim]."""
        raise NotImplementedError

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The candidates z_i: [B, latent_dim]."""
        raise NotImplementedError

    def log_likelihood_matrix(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """L[i, j] = log l(x_j | z_i), [M, N] for z [M, latent_dim], x [N, C, H, W] (one block)."""
        raise NotImplementedError

    def sample_prior(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Mean images [n, C, H, W] for latents z [n, latent_dim]."""
        raise NotImplementedError

    def posterior_noise_dims(self) -> tuple[int, ...] | None:
        """The sizes of the standard-normal draws that sample_posterior makes per sample and data point, in
        the order it makes them, when it makes them all before any other work and `sample_posterior_given`
        exists; None (the default) otherwise. Importance sampling then draws each point's noise from the
        point's own stream and runs the networks on many points at once."""
        return None

    def sample_posterior_given(self, x: torch.Tensor, eps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """sample_posterior with its standard-normal draws given: eps[k] [n, B, posterior_noise_dims()[k]]."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------
    def posterior_noise(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """n samples' standard-normal draws for each data point of x, in sample_posterior's order."""
        return [torch.randn(n, x.shape[0], d, device=x.device, dtype=x.dtype) for d in self.posterior_noise_dims()]

    @property
    def prior_module(self) -> nn.Module:
        return self.prior

    def log_importance_weights(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """log l(x|z) + log p(z) - log q(z|x) for n samples z ~ q(z|x): [n, B]."""
        z, log_q = self.sample_posterior(x, n)
        return self.log_likelihood(x, z) + self.log_prior(z) - log_q

    def elbo(self, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
        """One-sample ELBO terms per example: re = log l(x|z), kl = log q(z|x) - log p(z),
        loss = -re + beta * kl (the reference's warm-up objective)."""
        z, log_q = self.sample_posterior(x, 1)
        re = self.log_likelihood(x, z)[0]
        kl = (log_q - self.log_prior(z))[0]
        return {"re": re, "kl": kl, "elbo": re - kl, "loss": -re + beta * kl}

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        return self.generate(self.sample_prior(n))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.generate(self.posterior_mean(x))

    @contextlib.contextmanager
    def frozen(self):
        """Evaluation context: eval mode, no gradients, prior quantities computed once."""
        was_training = self.training
        self.eval()
        prior = getattr(self, "prior", None)
        try:
            with torch.no_grad(), (prior.frozen() if hasattr(prior, "frozen") else contextlib.nullcontext()):
                yield self
        finally:
            self.train(was_training)

    def decoder_macs(self) -> int:
        """Multiply-adds of one pass of the likelihood network (the floor of importance sampling)."""
        return sum(m.weight.numel() for m in self.decoder_modules() if isinstance(m, nn.Linear))

    def decoder_modules(self):
        """The modules run per importance sample: the likelihood network (and p(z1|z2))."""
        return [m for name, m in self.named_modules() if name.startswith(("p_x", "p_z1"))]

    def eval_bytes_per_sample(self) -> int:
        """Rough peak bytes of activations per (sample, data point) during importance sampling."""
        d = math.prod(self.input_shape)
        return 4 * (6 * d + 8 * 300 + 8 * self.latent_dim)

    def matrix_bytes_per_pair(self) -> int:
        """Rough peak bytes per (candidate, data point) pair while computing one block of L."""
        return 4 * 4
