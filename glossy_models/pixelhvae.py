"""Two-level PixelHVAE of the VampPrior reference: gated-conv encoders and a PixelCNN decoder
(8 masked 3x3 convolutions, 64 channels, mask A then 7 x mask B, batch norm, ReLU) on the image
concatenated with linear projections of z1 and z2 to image size."""

from __future__ import annotations

import torch
from torch import nn

from .architecture import PIXELCNN_DEFAULTS
from .base import LatentVariableModel
from .hvae import TwoLevelMixin
from .layers import Clamped, GatedConv2d, GatedDense, MaskedConv2d, conv_out, he_init
from .likelihoods import make_head


def _encoder_stack(c: int, first_kernel: int, third_kernel: int) -> nn.Sequential:
    return nn.Sequential(
        GatedConv2d(c, 32, first_kernel, 1, first_kernel // 2),
        GatedConv2d(32, 32, 3, 2, 1),
        GatedConv2d(32, 64, third_kernel, 1, third_kernel // 2),
        GatedConv2d(64, 64, 3, 2, 1),
        GatedConv2d(64, 6, 3, 1, 1),
    )


class PixelHVAE(TwoLevelMixin, LatentVariableModel):
    autoregressive = True

    def __init__(self, input_shape, input_type: str, prior_factory, z_dim: int, hidden: int,
                 channels: int = PIXELCNN_DEFAULTS["channels"], n_layers: int = PIXELCNN_DEFAULTS["n_layers"]):
        super().__init__()
        self.input_shape = c, h, w = tuple(input_shape)
        self.input_type = input_type
        self.z1_dim = self.z2_dim = z_dim
        self.latent_dim = 2 * z_dim
        self.channels = channels
        d = c * h * w
        h_size = 6 * conv_out(conv_out(h, 3, 2, 1), 3, 2, 1) * conv_out(conv_out(w, 3, 2, 1), 3, 2, 1)
        # q(z2 | x)
        self.q_z2_layers = _encoder_stack(c, 7, 5)
        self.q_z2_mean = nn.Linear(h_size, z_dim)
        self.q_z2_logvar = Clamped(h_size, z_dim, -6.0, 2.0)
        # q(z1 | x, z2)
        self.q_z1_layers_x = _encoder_stack(c, 3, 3)
        self.q_z1_layers_z2 = GatedDense(z_dim, h_size)
        self.q_z1_layers_joint = GatedDense(2 * h_size, hidden)
        self.q_z1_mean = nn.Linear(hidden, z_dim)
        self.q_z1_logvar = Clamped(hidden, z_dim, -6.0, 2.0)
        # p(z1 | z2)
        self._p_z1_layers(z_dim, z_dim, hidden)
        # p(x | z1, z2): PixelCNN on [x, proj(z1), proj(z2)]
        self.p_x_layers_z1 = GatedDense(z_dim, d)
        self.p_x_layers_z2 = GatedDense(z_dim, d)
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [MaskedConv2d("A" if i == 0 else "B", 3 * c if i == 0 else channels, channels, 3, 1),
                       nn.BatchNorm2d(channels), nn.ReLU(True)]
        self.pixelcnn = nn.Sequential(*layers)
        self.p_x = make_head(input_type, channels, c, conv=True)
        he_init(self)
        self.prior = prior_factory(dim=z_dim, encoder=self.q_z2, input_shape=self.input_shape)

    def q_z2(self, x):
        h = self.q_z2_layers(x.reshape(-1, *self.input_shape)).flatten(1)
        h = h.reshape(*x.shape[:-3], h.shape[-1])
        return self.q_z2_mean(h), self.q_z2_logvar(h)

    def q_z1_x(self, x):
        h = self.q_z1_layers_x(x.reshape(-1, *self.input_shape)).flatten(1)
        return h.reshape(*x.shape[:-3], h.shape[-1])

    def q_z1(self, hx, z2):
        h = self.q_z1_layers_joint(torch.cat([hx, self.q_z1_layers_z2(z2)], -1))
        return self.q_z1_mean(h), self.q_z1_logvar(h)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """[P, latent] -> [P, 2C, H, W]: the two latent projections as image channels."""
        z1, z2 = self.split(z)
        return torch.cat([self.p_x_layers_z1(z1).view(-1, *self.input_shape),
                          self.p_x_layers_z2(z2).view(-1, *self.input_shape)], 1)

    def decode(self, x: torch.Tensor, zproj: torch.Tensor):
        """Distribution of every pixel given the pixels before it: x [P, C, H, W], zproj [P, 2C, H, W]."""
        return self.p_x(self.pixelcnn(torch.cat([x, zproj], 1)))

    def log_likelihood(self, x, z):
        n, b = z.shape[:2]
        xs = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *self.input_shape)
        return self.decode(xs, self.project(z.reshape(n * b, -1))).log_prob(xs.flatten(1)).view(n, b)

    def log_likelihood_matrix(self, x, z):
        # inherently M*N decoder passes: every (candidate, image) pair in one batch
        m, n = z.shape[0], x.shape[0]
        zproj = self.project(z)  # [M, 2C, H, W], once per candidate
        xs = x.unsqueeze(0).expand(m, *x.shape).reshape(m * n, *self.input_shape)
        zs = zproj.unsqueeze(1).expand(m, n, *zproj.shape[1:]).reshape(m * n, *zproj.shape[1:])
        return self.decode(xs, zs).log_prob(xs.flatten(1)).view(m, n)

    @torch.no_grad()
    def generate(self, z):
        """Autoregressive sampling, pixel by pixel in raster order (one decoder pass per pixel)."""
        zproj = self.project(z)
        x = torch.zeros(z.shape[0], *self.input_shape, device=z.device)
        c, h, w = self.input_shape
        for i in range(h):
            for j in range(w):
                dist = self.decode(x, zproj)
                pix = dist.sample().view(-1, c, h, w)
                x[:, :, i, j] = pix[:, :, i, j]
        return x

    def decoder_macs(self) -> int:
        _, h, w = self.input_shape
        dense = sum(m.weight.numel() for m in self.decoder_modules() if isinstance(m, nn.Linear))
        conv = sum(m.weight.numel() * h * w for m in self.modules() if isinstance(m, nn.Conv2d)
                   and m not in set(self.q_z2_layers.modules()) | set(self.q_z1_layers_x.modules()))
        return dense + conv

    def eval_bytes_per_sample(self) -> int:
        c, h, w = self.input_shape
        return 4 * h * w * (4 * self.channels + 8 * c) + 4 * 6 * 300

    def matrix_bytes_per_pair(self) -> int:
        return self.eval_bytes_per_sample()
