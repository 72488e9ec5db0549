#!/usr/bin/env bash
# The CUDA path, measured on a machine with a GPU in about 8 minutes:
#   1. install glossy (online: scripts/setup.sh test; offline: WHEELS=<dir of wheels> installs from there
#      into the current Python, which must already have torch with CUDA),
#   2. the fast test tier with GLOSSY_TEST_DEVICE=cuda (the tests that take a device run on the GPU),
#   3. the benchmark on CUDA (the GPU's own matmul peak measured in the same run),
#   4. the Frey Faces VAE + standard prior row with the faithful settings, trained and evaluated on the GPU,
#      its NLL beside the committed CPU row's.
# Everything goes to OUT (default results/device_check): one log per step, bench.{csv,md}, the run's
# result.json and summary.md. Without a GPU it stops at once with one line and exit status 3.
#   scripts/device_check.sh [data_dir]        (data_dir: where frey's file is; default ../shared/data)
set -uo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
OUT="${OUT:-results/device_check}"
PY="${PYTHON:-python3}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "device_check: no GPU here (nvidia-smi finds none); nothing to measure" >&2
  exit 3
fi
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "=== $(date -Is) $1 ($(( $(date +%s) - t0 )) s in)" | tee -a "$OUT/summary.md"; }

step "install"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" -e ".[test]" > "$OUT/install.log" 2>&1 || {
    echo "device_check: install from $WHEELS failed (see $OUT/install.log)" >&2; exit 1; }
else
  ./scripts/setup.sh test > "$OUT/install.log" 2>&1 || { echo "device_check: setup failed (see $OUT/install.log)" >&2; exit 1; }
  PY=.venv/bin/python
fi
GLOSSY="$(dirname "$(command -v "$PY")")/glossy"
[ -x "$GLOSSY" ] || GLOSSY=glossy
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/summary.md" || exit 1

step "fast test tier on cuda"
GLOSSY_TEST_DEVICE=cuda timeout 240 "$PY" -m pytest -q -m "not slow" -x -p no:cacheprovider > "$OUT/tests.log" 2>&1
echo "tests: rc=$? $(tail -n 1 "$OUT/tests.log")" | tee -a "$OUT/summary.md"

step "benchmark on cuda"
timeout 150 "$PY" scripts/bench.py --device cuda --results-dir "$OUT" --e2e-points 10000 --e2e-samples 5000 \
  > "$OUT/bench.log" 2>&1
echo "bench: rc=$?" | tee -a "$OUT/summary.md"

step "frey vae standard row on cuda"
timeout 300 "$GLOSSY" train dataset=frey model=vae prior=standard device=cuda data_dir="$DATA" \
  runs_root="$OUT/runs" > "$OUT/frey_vae.log" 2>&1
echo "frey: rc=$?" | tee -a "$OUT/summary.md"
"$PY" - "$OUT" <<'EOF' | tee -a "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
found = sorted(out.glob("runs/frey-vae-standard-seed0*/result.json"))
cpu = Path("results/runs/frey-vae-standard-seed0/result.json")
if not found:
    print("frey vae standard: no result.json (see frey_vae.log)")
    sys.exit(0)
g = json.loads(found[0].read_text())
line = (f"frey vae standard on {g['device']}: NLL {g['nll']:.2f}, glossy max {g['glossy_max']:.2f}, "
        f"std {g['glossy_std']:.2f}, {g['epochs_trained']} epochs, train {g['train_time_s']:.0f} s, "
        f"eval {sum(g['timing_s'].values()):.0f} s")
if cpu.is_file():
    c = json.loads(cpu.read_text())
    line += f"; CPU row: NLL {c['nll']:.2f}, {c['epochs_trained']} epochs, train {c['train_time_s']:.0f} s"
print(line)
EOF
step "done"
