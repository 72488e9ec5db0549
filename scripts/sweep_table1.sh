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
# the grid is a config: conf/experiment/table1.yaml (hydra.sweeper.params); the SLURM resources are
# conf/hydra/launcher/glossy_slurm.yaml (extending submitit's submitit_slurm)
GLOSSY="${GLOSSY:-glossy}"
case "$mode" in
  local)
    jobs="${1:-2}"; shift || true
    exec $GLOSSY train -m experiment=table1 hydra/launcher=joblib hydra.launcher.n_jobs="$jobs" "$@" ;;
  slurm)
    partition="${1:-}"; shift || true
    exec $GLOSSY train -m experiment=table1 hydra/launcher=glossy_slurm \
      ${partition:+hydra.launcher.partition=$partition} "$@" ;;
  *)
    echo "usage: $0 local [N_JOBS] | slurm [PARTITION] [glossy overrides...]" >&2; exit 2 ;;
esac
