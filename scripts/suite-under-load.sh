#!/usr/bin/env bash
# The whole suite N times in a row while N_HOGS processes keep the CPUs busy: how CI behaves
# on a crowded runner (issue 12: "passes 3 times in a row on a loaded machine").
# Stops at the first failing run; one summary line per run in $LOG_DIR/summary.txt.
#   scripts/suite-under-load.sh [runs=3] [hogs=2] -- extra pytest arguments
set -euo pipefail
RUNS=${1:-3}
HOGS=${2:-2}
shift $(( $# >= 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t suite-under-load.XXXXXX)}
mkdir -p "$LOG_DIR"
hogs=()
cleanup() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for _ in $(seq "$HOGS"); do
  # A busy loop per hog; `exec` so the pid we kill is the loop itself.
  bash -c 'exec python3 -c "while True: pass"' &
  hogs+=($!)
done
echo "logs in $LOG_DIR; $HOGS CPU hogs: ${hogs[*]}" | tee "$LOG_DIR/summary.txt"
for run in $(seq "$RUNS"); do
  start=$(date +%s)
  if CI=1 "$PY" -m pytest -q -p no:cacheprovider "$@" >"$LOG_DIR/run-$run.log" 2>&1; then rc=0; else rc=$?; fi
  line="run $run/$RUNS: exit $rc in $(( $(date +%s) - start )) s, load average $(cut -d' ' -f1 /proc/loadavg): $(tail -1 "$LOG_DIR/run-$run.log")"
  echo "$line" | tee -a "$LOG_DIR/summary.txt"
  [ "$rc" -eq 0 ] || exit "$rc"
done
