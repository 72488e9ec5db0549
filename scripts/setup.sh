#!/usr/bin/env bash
# Create ./.venv (if needed) and install glossy into it, editable, with the given extras.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# setuptools ends every editable install of a flat layout with an informational notice ("Editable
# installation ... folders in your working directory with the same name as your package ..."): for glossy that
# folder is the package itself (glossy/), so the notice says nothing to act on and is filtered here
# the distribution was called "glossy" before it became glossy-lvm: an older .venv drops that name first
if .venv/bin/python -m pip show glossy >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -y -q glossy; fi
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
