#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, then unit, integration and compat tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check pallet tests bench
.venv/bin/mypy
set +e
# loadgroup: tests marked with one xdist_group (one peer daemon, one host-wide setting) share a worker
.venv/bin/pytest -n auto --dist loadgroup -p no:cacheprovider -rs "$@" tests
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
exit $rc
