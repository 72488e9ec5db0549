#!/usr/bin/env bash
# Runs per hour on this machine: one run using every core against one run per core side by side (one
# thread each), on the Frey Faces data; prints both and the ratios. Needs the machine otherwise quiet.
#   scripts/sweep_speed.sh [model] [prior] [epochs] [data_dir]     (defaults: vae standard 40 ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-vae}"; PRIOR="${2:-standard}"; EPOCHS="${3:-40}"; DATA="${4:-../shared/data}"
G="${GLOSSY:-.venv/bin/glossy}"
C="$(nproc)"
R="$(mktemp -d)"; trap 'rm -rf "$R"' EXIT
COMMON=(dataset=frey "model=$MODEL" "prior=$PRIOR" "data_dir=$DATA" "train.epochs=$EPOCHS"
        "train.warmup=$(( EPOCHS / 4 > 0 ? EPOCHS / 4 : 1 ))" train.trajectory_every=0 train.grid=0
        eval.is_samples=5 eval.heldout=false "eval.candidates=[test]" eval.jackknife=0 eval.ba_iters=5)
t0=$(date +%s.%N)
OMP_NUM_THREADS=$C "$G" train "${COMMON[@]}" runs_root="$R/one" > "$R/one.log" 2>&1
t1=$(date +%s.%N)
for i in $(seq 1 "$C"); do
  OMP_NUM_THREADS=1 "$G" train "${COMMON[@]}" runs_root="$R/side$i" > "$R/side$i.log" 2>&1 &
done
wait
t2=$(date +%s.%N)
python3 - "$R" "$C" "$t0" "$t1" "$t2" <<'PY'
import csv, glob, sys
R, C, t0, t1, t2 = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
def train_s(d):
    return sum(float(r["seconds"]) for r in csv.DictReader(open(glob.glob(f"{R}/{d}/*/history.csv")[0])))
one = train_s("one")
side = max(train_s(f"side{i}") for i in range(1, C + 1))
print(f"one run, {C} threads: training {one:.1f} s, wall {t1 - t0:.1f} s")
print(f"{C} runs side by side, 1 thread each: training {side:.1f} s (the slowest), wall {t2 - t1:.1f} s")
print(f"runs per hour, side by side / one at a time: {C * one / side:.2f}x training, "
      f"{C * (t1 - t0) / (t2 - t1):.2f}x counting start-up and evaluation")
PY
