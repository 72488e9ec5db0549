"""The benchmark: how close training, importance sampling and the glossy matrix run to the machine's limits,
measured in one run on the current device (`python scripts/bench.py [--flags]`, or `python -m glossy_cli.bench`;
the flags and their defaults: `settings.BenchSettings`, `--help`).

Per operation and model it records the achieved throughput, the floating-point floor of the operation (from the
layer sizes: multiply-adds counted with forward hooks on every nn.Linear / nn.Conv2d, two flops each), the fraction
of the matrix-product peak measured at the start of the same run (a large fp32 matmul), and the speed-up over a
naive baseline measured in the same run on the same model object: the reference's strategy (one test point at a
time, the encoder re-run for every chunk of samples, data through a torch DataLoader, the VampPrior's mixture
density element-wise with its pseudo-inputs re-encoded at every call). The table goes to results/bench.csv and
results/bench.md (atomically), with the machine, torch, thread count, load average and date. It prints
measurements and ratios only.

    settings   the flags (BenchSettings) and the quick mode's sizes
    measure    timing, the matmul peak, multiply-add counts
    baselines  the naive baselines, and training steps as glossy train runs them (train.train_one_epoch)
    rows       one row per operation
    report     the machine's facts and the markdown table (the table's renderer, glossy_cli/table.py)
    run        every row at each thread count, written out; main
"""

from .run import main, run_bench

__all__ = ["main", "run_bench"]
