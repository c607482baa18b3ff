#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: lint, then unit, integration and compat tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check pallet tests bench
.venv/bin/mypy
set +e
# loadgroup: tests marked with one xdist_group (one peer daemon) share a worker; `hostwide` tests change
# state every other test sees (a cgroup controller moved between hierarchies), and `alone` tests measure
# a share of the machine that the parallel run would skew, so both run after, one at a time
.venv/bin/pytest -n auto --dist loadgroup -p no:cacheprovider -rs -m "not hostwide and not alone" "$@" tests
rc=$?
.venv/bin/pytest -p no:cacheprovider -rs -m "hostwide or alone" "$@" tests
rc2=$?
set -e
if [ $rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
if [ $rc -ne 0 ]; then exit $rc; fi
if [ $rc2 -ne 0 ] && [ $rc2 -ne 5 ]; then exit $rc2; fi
exit 0
