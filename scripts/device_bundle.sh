#!/usr/bin/env bash
# Pack what scripts/device_rows.sh needs on a lent device machine, which has torch but not glossy's other
# dependencies, reaches no network and receives only the repository (64 MiB at most; ../shared/data stays
# behind). Writes .devbundle/ (ignored through .git/info/exclude): wheels/ (glossy and its pure-Python
# dependencies, about 1 MB; antlr4-python3-runtime 4.9.3 exists only as a source archive, so each is built here
# with pip wheel) and data/frey/ (3.5 MB). CIFAR-10 (176 MB) cannot travel in one call.
#   scripts/device_bundle.sh [data_dir]
# then, with the device tool: run(carry=[".devbundle"], command=
#   "python3 -m pip install -q --no-index --no-deps --target /tmp/site .devbundle/wheels/*.whl &&
#    PYTHONPATH=/tmp/site GLOSSY=/tmp/site/bin/glossy OUT=$OUT scripts/device_rows.sh pixelhvae .devbundle/data")
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
[ -d "$DATA/frey" ] || { echo "device_bundle: no $DATA/frey (give the data directory)" >&2; exit 2; }
grep -qx '/.devbundle/' .git/info/exclude 2>/dev/null || echo '/.devbundle/' >> .git/info/exclude
rm -rf .devbundle
mkdir -p .devbundle/wheels .devbundle/data
# the versions this machine's glossy runs with (its .venv, or PYTHON's), so the device runs the same code
pins="$("$PY" -c "import importlib.metadata as m; print(' '.join(n + '==' + m.version(n) for n in
  ['hydra-core', 'omegaconf', 'antlr4-python3-runtime', 'hydra-joblib-launcher', 'pooch', 'tabulate', 'tqdm']))")"
# shellcheck disable=SC2086  # the pins are words
"$PY" -m pip wheel -q --no-deps -w .devbundle/wheels . $pins
cp -r "$DATA/frey" .devbundle/data/
du -sh .devbundle
