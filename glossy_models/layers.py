"""Building blocks of the reference architectures: gated dense/conv layers and masked convolutions."""

from __future__ import annotations

import math

import torch
from torch import nn


class GatedDense(nn.Module):
    """h(x) * sigmoid(g(x)) with two linear maps (Dauphin et al.), as in the VampPrior code."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.h = nn.Linear(n_in, n_out)
        self.g = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # the same values, in place on the two maps' outputs
            return self.h(x).mul_(self.g(x).sigmoid_())
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedConv2d(nn.Module):
    """Gated convolution: conv_h(x) * sigmoid(conv_g(x))."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.h = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.g = nn.Conv2d(c_in, c_out, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # the same values, in place on the two maps' outputs
            return self.h(x).mul_(self.g(x).sigmoid_())
        return self.h(x) * torch.sigmoid(self.g(x))


class Clamped(nn.Module):
    """A linear map followed by a hard-tanh to [lo, hi] (the reference's log-variance heads)."""

    def __init__(self, n_in: int, n_out: int, lo: float, hi: float, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=bias)
        self.lo, self.hi = lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.linear(x), self.lo, self.hi)


class MaskedConv2d(nn.Conv2d):
    """PixelCNN convolution whose kernel sees only pixels before the centre (mask A) or up to it (B)."""

    def __init__(self, mask_type: str, c_in: int, c_out: int, kernel: int, padding: int, bias: bool = False):
        super().__init__(c_in, c_out, kernel, 1, padding, bias=bias)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask type must be 'A' or 'B', not {mask_type!r}")
        mask = torch.ones_like(self.weight)
        k_h, k_w = self.weight.shape[-2:]
        mask[:, :, k_h // 2, k_w // 2 + (mask_type == "B") :] = 0
        mask[:, :, k_h // 2 + 1 :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def he_init(module: nn.Module) -> None:
    """Normal(0, sqrt(2 / fan_in)) weights for every nn.Linear, as the reference initialises them."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features))


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1
