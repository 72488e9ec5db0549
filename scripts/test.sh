#!/usr/bin/env bash
# Set up, then run the fast test suite (and ruff). Extra arguments are passed to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test || exit 1
.venv/bin/ruff check . || exit 1
.venv/bin/python -m pytest -q -m "not slow" "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
