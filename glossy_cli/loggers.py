"""Training-curve loggers (`logger=csv|tensorboard|mlflow|none`): the per-epoch history and the final statistics,
also in the tool a user lives in. Every run writes history.csv, trajectory.csv and result.json whatever the
logger; `csv` (the default) is exactly that, `none` the same (nothing more), the others mirror them."""

from __future__ import annotations

import math
from pathlib import Path

from glossy.errors import GlossyError

LOGGERS = ("csv", "none", "tensorboard", "mlflow")


def _numbers(row: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) record, with / separated keys."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}{k}"] = float(v)
    return out


class FileLogger:
    """csv / none: history.csv, trajectory.csv and result.json, which every run writes anyway."""

    def log_epoch(self, epoch: int, history: dict, trajectory: dict | None = None) -> None:
        return None

    def log_final(self, result: dict) -> None:
        return None

    def close(self) -> None:
        return None


class TensorBoardLogger(FileLogger):
    """Scalars under <run>/tensorboard: train/* and val/* per epoch, trajectory/* at its points, eval/* once."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise GlossyError("logger=tensorboard needs the tensorboard package, which is not installed: "
                              "pip install tensorboard (or choose logger=csv)") from e
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log_epoch(self, epoch: int, history: dict, trajectory: dict | None = None) -> None:
        for k, v in _numbers(history).items():
            if k != "epoch":
                self.writer.add_scalar(k if k.startswith(("train", "val")) else f"train/{k}", v, epoch)
        for k, v in _numbers(trajectory or {}).items():
            if k != "epoch":
                self.writer.add_scalar(f"trajectory/{k}", v, epoch)
        self.writer.flush()

    def log_final(self, result: dict) -> None:
        step = int(result.get("epochs_trained") or 0)
        for k, v in _numbers({k: v for k, v in result.items() if k != "eval_config"}).items():
            self.writer.add_scalar(f"eval/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLogger(FileLogger):
    """One MLflow run per glossy run (named after its directory; tracking_uri null: <run>/mlruns), its resolved
    configuration as parameters, the history as metrics per epoch and the final statistics."""

    def __init__(self, run_dir: Path, cfg, tracking_uri: str | None) -> None:
        try:
            import mlflow  # pyright: ignore[reportMissingImports]  (optional: pip install mlflow)
        except ImportError as e:
            raise GlossyError("logger=mlflow needs the mlflow package, which is not installed: pip install mlflow "
                              "(or choose logger=csv)") from e
        from omegaconf import OmegaConf

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri or (run_dir / "mlruns").resolve().as_uri())
        mlflow.start_run(run_name=run_dir.name)
        flat = _numbers(OmegaConf.to_container(cfg, resolve=True))
        mlflow.log_params({k: v for k, v in list(flat.items())[:100]})

    def log_epoch(self, epoch: int, history: dict, trajectory: dict | None = None) -> None:
        metrics = {k: v for k, v in _numbers(history).items() if k != "epoch"}
        metrics.update({f"trajectory/{k}": v for k, v in _numbers(trajectory or {}).items() if k != "epoch"})
        self.mlflow.log_metrics(metrics, step=epoch)

    def log_final(self, result: dict) -> None:
        self.mlflow.log_metrics({f"eval/{k}": v for k, v in _numbers(
            {k: v for k, v in result.items() if k != "eval_config"}).items()})

    def close(self) -> None:
        self.mlflow.end_run()


def make_logger(cfg, run_dir: Path) -> FileLogger:
    """The logger that cfg.logger names (absent: csv)."""
    node = cfg.get("logger") or {}
    name = str(node.get("name", "csv"))
    if name == "tensorboard":
        return TensorBoardLogger(run_dir)
    if name == "mlflow":
        return MLflowLogger(run_dir, cfg, node.get("tracking_uri"))
    return FileLogger()
