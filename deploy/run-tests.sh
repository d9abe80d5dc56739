#!/usr/bin/env bash
# `make test`, inside `broker.py run` (WARROOM_BOOTSTRAP_SERVERS is set): the tests that
# need no broker run in one pytest process while the broker tests run, one at a time, in
# another, so both cores work. Extra arguments go to both pytest runs. Exits non-zero if
# either run fails; the no-broker run's output is printed after the broker run's.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
log=$(mktemp -t warroom-unit-XXXXXX.log)
"$PY" -m pytest tests/unit tests/streams -q "$@" >"$log" 2>&1 &
unit=$!
"$PY" -m pytest tests/integration tests/chaos -m "not long" --durations=25 "$@"
broker_tests=$?
wait "$unit"
unit_tests=$?
echo "--- tests that need no broker (tests/unit, tests/streams) ---"
cat "$log"
rm -f "$log"
[ "$broker_tests" -eq 0 ] && [ "$unit_tests" -eq 0 ]
