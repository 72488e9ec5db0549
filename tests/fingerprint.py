"""A fingerprint of this machine's floating-point arithmetic as torch computes it, for the bit-for-bit reference run.

A CPU's model name does not say which kernels torch dispatches to: two machines both named "AMD EPYC" with the same
torch gave different low bits of the same synthetic run. What decides the bits is the kernel each operation runs
(torch's CPU capability, the BLAS and its code path for the matrix products, the vectorised transcendental
functions). This runs the operations glossy's training and evaluation are made of (float32 and float64 matrix
products at a few shapes, the element-wise functions, reductions, an Adam step), one thread as the reference run,
and hashes the bits of their results: the same fingerprint means the same kernels gave the same bits here.

    python -m tests.fingerprint        # prints the fingerprint and what it was computed with
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

from tests.helpers import REPO


def _ops():
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    out = []
    for dtype in (torch.float32, torch.float64):
        for m, k, n in ((100, 784, 300), (300, 300, 40), (200, 40, 784), (7, 13, 5), (1000, 1000, 200)):
            a = torch.randn(m, k, generator=g, dtype=dtype)
            b = torch.randn(k, n, generator=g, dtype=dtype)
            out += [a @ b, torch.addmm(b[0], a, b)]
        x = torch.randn(10007, generator=g, dtype=dtype) * 8
        out += [f(x) for f in (torch.exp, torch.sigmoid, torch.tanh, torch.nn.functional.softplus,
                               torch.nn.functional.elu, torch.nn.functional.logsigmoid)]
        out += [torch.log(x.abs() + 1e-3), torch.log1p(x.abs()), torch.expm1(x / 8), x.sum(), x.exp().sum(),
                torch.logsumexp(x.reshape(-1, 1), 0), torch.logsumexp(x[:10000].reshape(100, 100), 1)]
    w = torch.nn.Parameter(torch.randn(300, 40, generator=g))
    opt = torch.optim.Adam([w], lr=5e-4)
    for _ in range(3):
        opt.zero_grad()
        (w.sin() ** 2).sum().backward()
        opt.step()
    out.append(w.detach())
    conv = torch.nn.functional.conv2d(torch.randn(4, 8, 28, 28, generator=g), torch.randn(16, 8, 3, 3, generator=g),
                                      padding=1)
    out.append(conv)
    return out


def fingerprint() -> dict:
    """{"torch", "capability", "blas", "digest"}: the digest is the sha256 of the bits of `_ops()`."""
    import torch

    h = hashlib.sha256()
    for t in _ops():
        h.update(t.detach().contiguous().numpy().tobytes())
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
            "blas": blas.group(1) if blas else "unknown",
            "digest": h.hexdigest()[:16]}


def fingerprint_of_a_run(env: dict | None = None) -> dict:
    """The fingerprint as a glossy process started with `env` computes it (one thread, its own environment: a
    forced ATEN_CPU_CAPABILITY or MKL code path changes the kernels)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "tests.fingerprint"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300, check=True)
    return json.loads(p.stdout)


if __name__ == "__main__":
    print(json.dumps(fingerprint(), sort_keys=True))
