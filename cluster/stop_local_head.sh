#!/usr/bin/env bash
# Stop the Ray head started by cluster/start_local_head.sh -- and only that one.
#
# start_local_head.sh records its session directory in ${STATE_FILE:-/tmp/recmind-ray-head.session};
# this script ends the processes whose command line names that session (GCS, raylet,
# dashboard, agents, workers), by pid. `ray stop` would end EVERY Ray instance of this user
# on the machine (other people's private test clusters included): use `--all` for that.
set -euo pipefail
STATE_FILE="${STATE_FILE:-/tmp/recmind-ray-head.session}"
if [[ "${1:-}" == "--all" ]]; then
  RAY_BIN="${RAY_BIN:-$(command -v ray || echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/ray")}"
  exec "$RAY_BIN" stop
fi
if [[ ! -s "$STATE_FILE" ]]; then
  echo "no recorded head session ($STATE_FILE); nothing stopped (use --all for 'ray stop')" >&2
  exit 1
fi
session="$(cat "$STATE_FILE")"
pids="$(pgrep -f -- "$session" || true)"
if [[ -z "$pids" ]]; then
  echo "head session $session is not running"
else
  echo "stopping head session $session: pids $(echo $pids)"
  kill $pids 2>/dev/null || true
  for _ in $(seq 20); do
    sleep 0.5
    alive="$(pgrep -f -- "$session" || true)"
    [[ -z "$alive" ]] && break
  done
  [[ -n "${alive:-}" ]] && kill -9 $alive 2>/dev/null || true
fi
rm -f "$STATE_FILE"
