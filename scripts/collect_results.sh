#!/usr/bin/env bash
# Gather what is worth committing from finished runs (those with a result.json) into
# <results>/runs/<run>/: result.json, config.yaml, history.csv, trajectory.csv and the sample and
# reconstruction grids, the Monte Carlo spread (mc_spread.json), plus the run's trajectory figure (figure1.png/.pdf); then regenerate Table 1
# into <results>/ from every run under <results>/runs/. Checkpoints (and points.pt) are never copied.
#   scripts/collect_results.sh [runs_root] [results_dir]
set -euo pipefail
RUNS="${1:-$HOME/glossy-runs}"
OUT="${2:-results}"
GLOSSY="${GLOSSY:-glossy}"
[ -d "$RUNS" ] || { echo "collect_results: no such runs_root: $RUNS" >&2; exit 2; }
for d in "$RUNS"/*/; do
  d="${d%/}"
  [ -f "$d/result.json" ] || continue
  dest="$OUT/runs/$(basename "$d")"
  mkdir -p "$dest"
  for f in result.json mc_spread.json config.yaml history.csv trajectory.csv samples.png reconstructions.png; do
    if [ -f "$d/$f" ]; then install -m 644 "$d/$f" "$dest/$f"; fi
  done
  if [ -f "$d/trajectory.csv" ]; then $GLOSSY figure checkpoint="$d" out="$dest/figure1" >/dev/null; fi
  echo "collected $dest"
done
# results written before the jackknife: their bootstrap intervals of the glossy statistics are removed
python3 "$(dirname "$0")/drop_bootstrap_intervals.py" "$OUT/runs" >/dev/null
# the table from every run collected so far (those of earlier sessions included), not only from RUNS
$GLOSSY table runs_root="$OUT/runs" results_dir="$OUT"
