#!/usr/bin/env bash
# The full Table-1 sweep: 6 datasets x 3 likelihood classes x 2 priors = 36 runs, one Hydra multirun
# with the reference settings. Re-running the same command resumes every unfinished run.
#
#   scripts/sweep_table1.sh local [N_JOBS]       # in parallel on this machine (joblib launcher;
#                                                # N_JOBS defaults to the core count, one thread per run)
#   scripts/sweep_table1.sh slurm [PARTITION]    # one SLURM job per run (submitit launcher)
#
# Most runs per hour on a CPU machine of C cores: C runs side by side with one thread each, not fewer
# runs with more threads (training at batch 100 cannot use many cores). Measured on this project's 2-core
# machine, Frey Faces, 40 VAE / 15 HVAE-VampPrior epochs: two runs side by side at one thread each did
# 1.34x / 1.23x the training epochs per hour of one run at two threads, 1.59x / 1.45x the runs per hour
# counting start-up and evaluation (scripts/sweep_speed.sh measures it). OMP_NUM_THREADS (if unset: C / N_JOBS, at least 1) is the threads per run.
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
    cores="$(nproc 2>/dev/null || echo 2)"
    jobs="${1:-$cores}"; shift || true
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores / jobs > 0 ? cores / jobs : 1 ))}"
    exec $GLOSSY train -m experiment=table1 hydra/launcher=joblib hydra.launcher.n_jobs="$jobs" "$@" ;;
  slurm)
    partition="${1:-}"; shift || true
    exec $GLOSSY train -m experiment=table1 hydra/launcher=glossy_slurm \
      ${partition:+hydra.launcher.partition=$partition} "$@" ;;
  *)
    echo "usage: $0 local [N_JOBS] | slurm [PARTITION] [glossy overrides...]" >&2; exit 2 ;;
esac
