"""How much do subnormal floats slow training on this CPU? A measurement, not a test.

Loads a run's last.pt (model and optimiser state) and times the same training steps (16 batches of 100
training images, one thread) with subnormal arithmetic kept and then flushed to zero, which is what
`glossy train` and `glossy eval` do. Prints both times and their ratio; writes nothing.

    python scripts/denormal_speed.py ~/glossy-runs/frey-hvae-vamp-seed0 [data_dir]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glossy_cli.runs import build_model, load_data, read_checkpoint


def steps_seconds(model, opt, x: torch.Tensor, batches: int = 16, batch: int = 100) -> float:
    t = time.perf_counter()
    for b in range(batches):
        opt.zero_grad()
        model.elbo(x[b * batch : (b + 1) * batch], 1.0)["loss"].mean().backward()
        opt.step()
    return time.perf_counter() - t


def main(argv: list[str]) -> int:
    if not argv or not (Path(argv[0]) / "last.pt").is_file():
        print("usage: denormal_speed.py <run dir with last.pt> [data_dir]", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    ck = read_checkpoint(Path(argv[0]) / "last.pt")
    cfg = OmegaConf.create(ck["config"])
    if len(argv) > 1:
        cfg.data_dir = argv[1]
    x = load_data(cfg).train[:1600]
    times = {}
    for flush in (False, True):  # the same state each time: the steps change the weights
        model = build_model(ck["model_args"])
        model.load_state_dict(ck["model_state"])
        opt = torch.optim.Adam(model.parameters(), lr=float(cfg.train.lr))
        opt.load_state_dict(ck["optimizer_state"])
        torch.set_flush_denormal(flush)
        steps_seconds(model, opt, x, batches=2)  # warm-up
        times[flush] = min(steps_seconds(model, opt, x) for _ in range(2))
    torch.set_flush_denormal(False)
    print(f"torch {torch.__version__}; {ck['model_args']}")
    print(f"16 training steps: subnormals kept {times[False]:.2f} s, flushed {times[True]:.2f} s, "
          f"ratio {times[False] / times[True]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
