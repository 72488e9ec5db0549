#!/usr/bin/env bash
# Set up, then run the fast test suite (and ruff). Extra arguments are passed to pytest (`-n 0`: one process).
# The tests run in one pytest worker per core (pytest-xdist, at most 4), each with one torch thread.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test || exit 1
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -q -m "not slow" -n auto --maxprocesses 4 "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
