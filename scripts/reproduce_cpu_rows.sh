#!/usr/bin/env bash
# The Table-1 rows reproduced on a 2-core CPU with the faithful settings (full early stopping,
# S = 5000), one run after another. Re-running resumes whatever is unfinished.
#   scripts/reproduce_cpu_rows.sh [runs_root] [data_dir]
# then: scripts/collect_results.sh <runs_root> results (Table 1, and each run's history, trajectory and figure);
# glossy figure checkpoint=<runs_root>/synthetic-vae-standard-seed0 out=results/figure1_synthetic
set -euo pipefail
RUNS="${1:-$HOME/glossy-runs}"
DATA="${2:-../shared/data}"
GLOSSY="${GLOSSY:-glossy}"
# N = 10^4 test images against 5 x 10^4 training candidates: the held-out fit's matrix takes 1.9 GiB and
# Blahut-Arimoto's exp-matrix 3.7 GiB more, hence the 8 GiB budget for these two
BIG="eval.memory_budget_gb=8"
$GLOSSY train dataset=synthetic model=vae prior=standard runs_root="$RUNS" train.trajectory_every=5 $BIG
for ds in frey caltech101; do
  for model in vae hvae; do
    for prior in standard vamp; do
      $GLOSSY train dataset=$ds model=$model prior=$prior data_dir="$DATA" runs_root="$RUNS"
    done
  done
done
# static MNIST: a trajectory point every 20 epochs (each scores 5 x 10^4 training candidates)
for model in vae hvae; do
  for prior in standard vamp; do
    $GLOSSY train dataset=mnist model=$model prior=$prior data_dir="$DATA" runs_root="$RUNS" $BIG \
      train.trajectory_every=20
  done
done
# Frey Faces PixelHVAE (these two were trained on a GPU: about 2 x 70 min of importance sampling here)
for prior in standard vamp; do
  $GLOSSY train dataset=frey model=pixelhvae prior=$prior data_dir="$DATA" runs_root="$RUNS" train.trajectory_every=20
done
