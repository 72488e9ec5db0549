"""The paper's synthetic data set (appendix 6.2): a known latent-variable model.

z is uniform on 10 binary 28x28 digit prototypes; x flips every pixel of its prototype independently
with probability `flip`. The prototypes are drawn offline from a 5x7 bitmap font (no download, no font
file), so the data set is bit-for-bit reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import DatasetMeta, OptionError, Splits, Verified, at_least, default_of
from .download import check_options

if TYPE_CHECKING:
    import torch

_GLYPHS = {
    0: [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
    1: ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
    2: [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
    3: ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
    4: ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
    5: ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
    6: ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
    7: ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
    8: [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
    9: [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
}


def prototypes() -> torch.Tensor:
    """[10, 1, 28, 28] binary digit images: each glyph cell becomes a 3x4 block, centred."""
    import torch
    out = torch.zeros(10, 1, 28, 28)
    for digit, rows in _GLYPHS.items():
        glyph = torch.tensor([[c == "#" for c in row] for row in rows], dtype=torch.float32)  # [7, 5]
        big = glyph.repeat_interleave(3, 0).repeat_interleave(4, 1)  # [21, 20]
        out[digit, 0, 3:24, 4:24] = big
    return out


class SyntheticTrueModel:
    """The true model: uniform prior on the prototypes, i.i.d. pixel flips with probability `flip`."""

    def __init__(self, protos: torch.Tensor, flip: float) -> None:
        self.protos = protos.flatten(1)  # [K, D]
        self.flip = flip
        self.n_latent = self.protos.shape[0]

    def log_likelihood_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """[K, N] exact log l_true(x_j | z_k), from Hamming distances computed as matrix products."""
        import torch
        p = self.protos.to(device=x.device, dtype=torch.float64)
        xf = x.flatten(1).to(torch.float64)
        hamming = p @ (1 - xf).T + (1 - p) @ xf.T  # [K, N]
        d = xf.shape[1]
        return hamming * math.log(self.flip) + (d - hamming) * math.log1p(-self.flip)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """[N] exact log p_true(x_j) = logsumexp_k log l_true(x_j|z_k) - log K."""
        import torch
        return torch.logsumexp(self.log_likelihood_matrix(x), 0) - math.log(self.n_latent)

    def expected_nll(self) -> float:
        """ln K + D H(flip): the expected true NLL when prototypes are far apart (79.17 nats here)."""
        d, f = self.protos.shape[1], self.flip
        return math.log(self.n_latent) - d * (f * math.log(f) + (1 - f) * math.log1p(-f))


def load(data_dir=None, download: bool = False, *, n_train: int = 50000, n_val: int = 10000,
         n_test: int = 10000, flip: float = 0.02, data_seed: int = 0, **options) -> Splits:
    import torch
    check_options("synthetic", options, ())
    protos = prototypes()
    gen = torch.Generator().manual_seed(data_seed)

    def draw(n: int) -> torch.Tensor:
        labels = torch.randint(10, (n,), generator=gen)
        flips = torch.rand(n, 1, 28, 28, generator=gen) < flip
        return torch.where(flips, 1 - protos[labels], protos[labels])

    train, val, test = draw(n_train), draw(n_val), draw(n_test)
    meta = DatasetMeta(name="synthetic", input_type="binary", shape=(1, 28, 28), dynamic_binarization=False,
                       pseudo_init_mean=0.05, pseudo_init_std=0.01,
                       true_model=SyntheticTrueModel(protos, flip),
                       source="generated (10 font prototypes, pixel flips)")
    return Splits(train, val, test, meta)


def verify(data_dir=None, *, n_train: int = 50000, n_val: int = 10000, n_test: int = 10000, flip: float = 0.02,
           data_seed: int = 0, digests=None, **options) -> Verified:
    """Generated on demand: no files to verify; the split sizes are the options'."""
    check_options("synthetic", options, ())
    return Verified({"train": n_train, "val": n_val, "test": n_test}, {})


@dataclass
class Options:
    """dataset.options of `dataset=synthetic` (checked when the configuration is composed)."""

    n_train: int = default_of(load, "n_train")
    n_val: int = default_of(load, "n_val")
    n_test: int = default_of(load, "n_test")
    flip: float = default_of(load, "flip")
    data_seed: int = default_of(load, "data_seed")

    def __post_init__(self):
        at_least(self, 1, "n_train", "n_val", "n_test")
        at_least(self, 0, "data_seed")
        if not 0 <= self.flip <= 0.5:
            raise OptionError(f"dataset.options.flip={self.flip}: must lie in [0, 0.5]")
