#!/usr/bin/env bash
# The full Table-1 sweep: 6 datasets x 3 likelihood classes x 2 priors = 36 runs, one Hydra multirun
# with the reference settings. Re-running the same command resumes every unfinished run.
#
#   scripts/sweep_table1.sh local [N_JOBS]       # in parallel on this machine (joblib launcher)
#   scripts/sweep_table1.sh slurm [PARTITION]    # one SLURM job per run (submitit launcher)
#
# Extra arguments after the first two go to `glossy train` (e.g. runs_root=/scratch/glossy-runs).
# Afterwards: glossy table runs_root=<runs_root>
set -euo pipefail
mode="${1:-local}"; shift || true
GRID="dataset=mnist,omniglot,caltech101,frey,histopathology,cifar10 model=vae,hvae,pixelhvae prior=standard,vamp"
GLOSSY="${GLOSSY:-glossy}"
case "$mode" in
  local)
    jobs="${1:-2}"; shift || true
    exec $GLOSSY train -m $GRID hydra/launcher=joblib hydra.launcher.n_jobs="$jobs" "$@" ;;
  slurm)
    partition="${1:-}"; shift || true
    exec $GLOSSY train -m $GRID hydra/launcher=submitit_slurm hydra.launcher.timeout_min=4320 \
      hydra.launcher.cpus_per_task=8 hydra.launcher.gpus_per_node=1 hydra.launcher.mem_gb=32 \
      ${partition:+hydra.launcher.partition=$partition} "$@" ;;
  *)
    echo "usage: $0 local [N_JOBS] | slurm [PARTITION] [glossy overrides...]" >&2; exit 2 ;;
esac
