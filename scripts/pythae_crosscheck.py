"""glossy's NLL of a pythae model against pythae's own `get_nll`, on the same model and images at the same S.

Trains a pythae VAE (default MLP, `bce`) or VAMP on static MNIST with pythae's own trainer (outside glossy), then
runs `glossy eval checkpoint=<its folder> dataset=mnist` (every number, all test images) and pythae's
`get_nll` on the same images, and prints both with their times and ratio. The numbers go to --out as JSON.
    python scripts/pythae_crosscheck.py --model vae --epochs 20 --samples 500 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def train(kind: str, epochs: int, out: Path, data_dir: str, n_train: int | None, seed: int) -> Path:
    from pythae.models import VAE, VAMP, VAEConfig, VAMPConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    import glossy

    torch.manual_seed(seed)
    splits = glossy.load_dataset("mnist", data_dir)
    train_x = splits.train[:n_train].numpy() if n_train else splits.train.numpy()
    common = {"input_dim": (1, 28, 28), "latent_dim": 16, "reconstruction_loss": "bce"}
    model = VAE(VAEConfig(**common)) if kind == "vae" else VAMP(VAMPConfig(**common, number_components=50))
    cfg = BaseTrainerConfig(output_dir=str(out), num_epochs=epochs, learning_rate=1e-3, per_device_train_batch_size=100,
                            per_device_eval_batch_size=100, no_cuda=True, steps_saving=None, seed=seed)
    TrainingPipeline(training_config=cfg, model=model)(train_data=train_x, eval_data=splits.val[:2000].numpy())
    return sorted(out.glob("*_training_*/final_model"))[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("vae", "vamp"), default="vae")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=None, help="training images (default: all 50000)")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--work", default="pythae-crosscheck", help="where the pythae model and glossy's run go")
    ap.add_argument("--out", default=None, help="JSON of the numbers")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    work = Path(a.work)
    folder = train(a.model, a.epochs, work / f"pythae-{a.model}", a.data_dir, a.n_train, a.seed)
    cmd = [str(Path(sys.executable).parent / "glossy"), "eval", f"checkpoint={folder}", "dataset=mnist",
           f"data_dir={a.data_dir}", f"runs_root={work / 'runs'}", f"eval.is_samples={a.samples}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_glossy = time.perf_counter() - t0
    result = json.loads(max((work / "runs").glob("*/result.json"), key=lambda p: p.stat().st_mtime).read_text())
    import glossy
    from glossy.adapters import load_pythae

    net = load_pythae(folder).net
    x = glossy.load_dataset("mnist", a.data_dir).test  # all of them, as glossy eval took them
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        theirs = -float(net.get_nll(x, n_samples=a.samples, batch_size=100))
    t_pythae = time.perf_counter() - t0
    out = {"model": a.model, "folder": str(folder), "samples": a.samples, "points": len(x),
           "nll_glossy": result["nll"], "nll_glossy_ci": result.get("nll_ci"), "nll_pythae": theirs,
           "difference": result["nll"] - theirs, "glossy_eval_s_all_numbers": t_glossy,
           "glossy_importance_sampling_s": result.get("timing_s", {}).get("importance_sampling"),
           "pythae_get_nll_s": t_pythae, "torch": str(torch.__version__)}
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
