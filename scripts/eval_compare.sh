#!/usr/bin/env bash
# One checkpoint evaluated by two glossy installs back to back (before / after a change), with every process
# whose command line matches PAUSE (default: the long runs' queue) SIGSTOPped meanwhile and resumed on exit.
# Each install gets its own copy of the run directory; compare their result.json timing_s and numbers.
#   scripts/eval_compare.sh <glossy_before> <glossy_after> <run_dir> <out_dir> [overrides...]
# e.g. scripts/eval_compare.sh ~/old/.venv/bin/glossy .venv/bin/glossy ~/runs/synth ~/cmp eval.is_samples=500
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 <glossy_before> <glossy_after> <run_dir> <out_dir> [overrides...]" >&2; exit 2; }
BEFORE=$1 AFTER=$2 RUN=$3 OUT=$4; shift 4
[ -f "$RUN/best.pt" ] || { echo "$0: no best.pt in $RUN" >&2; exit 2; }
PIDS=$(pgrep -f "${PAUSE:-reproduce_queue|glossy train}" || true)
[ -z "$PIDS" ] || kill -STOP $PIDS
trap '[ -z "$PIDS" ] || kill -CONT $PIDS' EXIT
for v in after before; do
  mkdir -p "$OUT/$v"
  cp "$RUN"/best.pt "$RUN"/config.yaml "$OUT/$v/" 2>/dev/null || cp "$RUN"/best.pt "$OUT/$v/"
  G=$([ $v = before ] && echo "$BEFORE" || echo "$AFTER")
  /usr/bin/time -v "$G" eval checkpoint="$OUT/$v/best.pt" hydra.run.dir="$OUT/$v" "$@" > "$OUT/$v.log" 2>&1
done
for v in before after; do
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], json.dumps(r['timing_s']))" \
    "$OUT/$v/result.json" $v
done
