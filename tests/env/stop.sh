#!/usr/bin/env bash
# Stop what tests/env/start.sh started: TERM the PIDs in STATE_DIR/pids, wait
# up to ~5 s, then KILL the survivors. Idempotent (missing file / dead PIDs are fine).
#
#   tests/env/stop.sh STATE_DIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
PIDS_FILE="$1/pids"
[ -f "$PIDS_FILE" ] || exit 0

pids=()
while read -r pid; do
  case "$pid" in
    ''|*[!0-9]*) continue ;;
  esac
  # Guard against PID reuse (e.g. a stale file after a reboot): only touch
  # processes that look like ours.
  if [ -r "/proc/$pid/cmdline" ] &&
     ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'etcd|kube-apiserver|kube-controller-manager|moto_server'; then
    continue
  fi
  pids+=("$pid")
done <"$PIDS_FILE"

alive() {
  local out=() p
  for p in "${pids[@]}"; do
    # A zombie (our own un-reaped child) counts as gone.
    if kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" != Z ]; then
      out+=("$p")
    fi
  done
  pids=(${out[@]+"${out[@]}"})
  [ "${#pids[@]}" -gt 0 ]
}

if alive; then
  # Stop in reverse start order (controller manager before apiserver before etcd).
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    alive || break
    sleep 0.1
  done
  if alive; then
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
      alive || break
      sleep 0.1
    done
  fi
fi

rm -f "$PIDS_FILE"
