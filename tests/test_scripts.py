"""The experiment scripts under scripts/ compute what they say."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from glossy_models.likelihoods import DiscretizedLogistic256

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import logistic_variants  # noqa: E402


def test_logistic_variants_normalised_is_glossys_likelihood_and_the_others_drop_the_tails():
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(3, 50, generator=g)
    log_scale = torch.empty(3, 50).uniform_(-4.5, 0.0, generator=g)
    x = torch.randint(1, 255, (3, 50), generator=g) / 256.0  # inner bins ...
    x[:, :5], x[:, 5:10] = 0.0, 255 / 256  # the outer bins, where the variants differ
    ours = DiscretizedLogistic256(loc, log_scale).log_prob(x)
    norm = logistic_variants.pixel_log_prob(x, loc, log_scale, "normalised")
    torch.testing.assert_close(norm.sum(-1), ours, rtol=1e-5, atol=1e-3)
    no_tails = logistic_variants.pixel_log_prob(x, loc, log_scale, "no tails")
    ref = logistic_variants.pixel_log_prob(x, loc, log_scale, "reference")
    inner = slice(10, None)
    torch.testing.assert_close(no_tails[:, inner], norm[:, inner], rtol=1e-4, atol=1e-4)
    assert (no_tails[:, :10] < norm[:, :10]).all()  # the tails are missing from the outer bins
    assert (ref >= torch.log(torch.tensor(1e-7)) - 1e-6).all()
    # where the bin probability is well above float32 rounding, the reference's formula is no tails + 1e-7
    big = no_tails > -10
    torch.testing.assert_close(ref[big], torch.log(no_tails[big].exp() + 1e-7), rtol=1e-4, atol=1e-4)
