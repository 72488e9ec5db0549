#!/usr/bin/env bash
# The four CIFAR-10 rows of Table 1 (VAE and HVAE, standard prior and VampPrior) with the reference settings of
# every other row (up to 2000 epochs, KL warm-up 100, early stopping 50, S = 5000, all 10^4 test images, both
# candidate sources, the held-out sandwich), cheapest first, one after another. Re-running resumes whatever is
# unfinished. No trajectory points (train.trajectory_every=0: each would score 4 x 10^4 training candidates
# of 3072 pixels; the trajectory does not change what is trained or evaluated).
#   scripts/reproduce_cifar_rows.sh [runs_root] [data_dir]
# then: scripts/collect_results.sh <runs_root> results. Cost on a 2-core CPU: results/measurements.md.
set -euo pipefail
RUNS="${1:-$HOME/glossy-runs}"
DATA="${2:-../shared/data}"
GLOSSY="${GLOSSY:-glossy}"
# 10^4 test images against 4 x 10^4 training candidates: the held-out fit's matrices need the larger budget
for spec in "vae standard" "hvae standard" "vae vamp" "hvae vamp"; do
  set -- $spec
  $GLOSSY train dataset=cifar10 model="$1" prior="$2" data_dir="$DATA" runs_root="$RUNS" \
    eval.memory_budget_gb=8 train.trajectory_every=0
done
