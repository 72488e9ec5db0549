#!/usr/bin/env bash
# The rows that need a GPU, as one prepared run for a lent device machine (which is bare each time and returns
# only what is written under OUT, never a checkpoint): train and evaluate side by side on the one GPU, stop
# cleanly at a deadline, and bring back each finished run's small files (through scripts/collect_results.sh).
#   scripts/device_rows.sh pixelhvae [data_dir]   Frey Faces PixelHVAE, standard prior and VampPrior, training
#                                                 seeds SEEDS (default "0 1 2"), every training and test frame
#                                                 a glossy candidate (eval.autoregressive_max_candidates=null:
#                                                 1565 x 200 and 200 x 200 per-pair decoder passes, not 100)
#   scripts/device_rows.sh cifar10 [data_dir]     the four CIFAR-10 rows (scripts/reproduce_cifar_rows.sh's
#                                                 settings), side by side; their data (176 MB) is more than
#                                                 one device call carries (64 MiB), so it must be there first
# Pack the wheels and the data first with scripts/device_bundle.sh (its header has the device call).
# Environment: OUT (default results/device_rows), DEADLINE_S (default 540: the runs get SIGTERM then, save
# their state between two steps and stop; a run without result.json is reported as unfinished), SEEDS,
# GLOSSY (the command; default .venv/bin/glossy, else glossy on PATH), EXTRA (more overrides for every run,
# e.g. for a dry run on a CPU), DEVICE_ROWS_ALLOW_CPU=1 (run without a GPU: only for checking this script).
# Afterwards, on the development machine:
#   scripts/collect_results.sh <OUT>/collected/runs results
# copies the finished runs into results/runs/ and regenerates Table 1.
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT="${1:-}"
DATA="${2:-../shared/data}"
OUT="${OUT:-results/device_rows}"
DEADLINE_S="${DEADLINE_S:-540}"
SEEDS="${SEEDS:-0 1 2}"
EXTRA="${EXTRA:-}"
RUNS="${RUNS:-$HOME/glossy-device-runs}"

case "$WHAT" in
  pixelhvae|cifar10) ;;
  *) echo "device_rows: say which rows: pixelhvae or cifar10 (got '${WHAT}')" >&2; exit 2 ;;
esac
if [ "${DEVICE_ROWS_ALLOW_CPU:-0}" != 1 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "device_rows: no GPU here (nvidia-smi finds none); these rows take hours on a CPU" >&2
    exit 3
  fi
fi
GLOSSY="${GLOSSY:-}"
if [ -z "$GLOSSY" ]; then if [ -x .venv/bin/glossy ]; then GLOSSY=.venv/bin/glossy; else GLOSSY=glossy; fi; fi
command -v "$GLOSSY" >/dev/null 2>&1 || { echo "device_rows: no glossy command (run scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$OUT/logs" "$RUNS"
t0=$(date +%s)
echo "device_rows $WHAT: started $(date -Is), deadline ${DEADLINE_S} s, runs under $RUNS" | tee "$OUT/summary.md"
PY="$(dirname "$(command -v "$GLOSSY")")/python"
[ -x "$PY" ] || PY="${PYTHON:-python3}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" >> "$OUT/summary.md" 2>&1
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >> "$OUT/summary.md" 2>&1

specs=()
if [ "$WHAT" = pixelhvae ]; then
  for seed in $SEEDS; do
    for prior in standard vamp; do
      specs+=("dataset=frey model=pixelhvae prior=$prior seed=$seed eval.autoregressive_max_candidates=null")
    done
  done
else
  for spec in "vae standard" "hvae standard" "vae vamp" "hvae vamp"; do
    set -- $spec
    specs+=("dataset=cifar10 model=$1 prior=$2 eval.memory_budget_gb=8")
  done
fi

pids=()
i=0
for spec in "${specs[@]}"; do
  # shellcheck disable=SC2086  # the overrides are words
  "$GLOSSY" train $spec data_dir="$DATA" runs_root="$RUNS" train.trajectory_every=0 $EXTRA \
    > "$OUT/logs/run$i.log" 2>&1 &
  pids+=($!)
  echo "run$i: $spec (pid $!)" >> "$OUT/summary.md"
  i=$((i + 1))
done

# the deadline: SIGTERM makes each run save its state between two steps and stop (docs/robustness.md)
# (its sleep is killed with it, and it holds no output open: a caller reading this script's output is not kept
# waiting for the deadline once the runs are done)
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$DEADLINE_S" & sleeper=$!
  wait "$sleeper"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
) > /dev/null 2>&1 &
watchdog=$!
for p in "${pids[@]}"; do wait "$p"; done
kill -TERM "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
echo "all runs ended after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.md"

# bring back the finished runs' small files with collect_results.sh (its list of files, never a checkpoint; its
# table needs pandas, which the device machine may lack: the copies are made before it), and name the others
GLOSSY="$GLOSSY" scripts/collect_results.sh "$RUNS" "$OUT/collected" > "$OUT/logs/collect.log" 2>&1 ||
  echo "collect_results ended with an error after copying (see $OUT/logs/collect.log)" | tee -a "$OUT/summary.md"
for d in "$RUNS"/*/; do
  d="${d%/}"
  name="$(basename "$d")"
  if [ -f "$d/result.json" ]; then
    echo "finished: $name" | tee -a "$OUT/summary.md"
  else
    last="$(tail -n 1 "$d/history.csv" 2>/dev/null | cut -d, -f1)"
    echo "unfinished: $name (last epoch ${last:-none})" | tee -a "$OUT/summary.md"
    [ -f "$d/history.csv" ] && mkdir -p "$OUT/unfinished/$name" && cp "$d/history.csv" "$OUT/unfinished/$name/"
  fi
done
exit 0
