"""The Bernoulli log-likelihood of one importance-sampling block (62 samples x 8 points x 784 pixels, clamped
logits), its softplus as torch computes it against log(1 + exp(l)) in place: microseconds (the median of the
fastest quarter of 200 runs) and each form's worst error against float64 (docs/performance.md, "The whole
evaluation against its floor"). The second form is glossy's since NUMERICS 3, without gradients (importance
sampling); training keeps torch's softplus.

    python scripts/bernoulli_logprob_speed.py [threads]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from glossy_models.likelihoods import LOGIT_MAX


def quick(fn, n: int = 200) -> float:
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    t.sort()
    return t[len(t) // 4] * 1e6


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(62, 8, 784, generator=g) * 6).clamp_(-LOGIT_MAX, LOGIT_MAX)
    x = (torch.rand(8, 784, generator=g) < 0.3).float()
    exact = F.softplus(logits.double())
    forms = {"softplus (glossy)": lambda: F.softplus(logits), "log(1 + exp(l))": lambda: logits.exp().add_(1.0).log_()}
    for name, fn in forms.items():
        err = (fn().double() - exact).abs().max().item()
        print(f"{name:18s} {quick(fn):7.0f} us, worst error {err:.2g}")
    whole = {"glossy": lambda: F.softplus(logits).sub_(torch.mul(logits, x)).sum(-1).neg_(),
             "log(1 + exp(l))": lambda: logits.exp().add_(1.0).log_().sub_(torch.mul(logits, x)).sum(-1).neg_()}
    for name, fn in whole.items():
        print(f"log-prob, {name:15s} {quick(fn):7.0f} us")
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
