#!/usr/bin/env bash
# Stop the Ray head started by cluster/start_local_head.sh -- and only that one -- and return
# once its processes are gone.
#
# start_local_head.sh records its session in $STATE_FILE (cluster/local_head_settings.sh: per
# user and GCS port); this script ends the processes whose command line names that session
# (GCS, raylet, dashboard, agents, workers) plus the owner of DASH_PORT, by pid, and waits up
# to STOP_TIMEOUT seconds (16, as `ray stop --grace-period`) for them to exit before it sends SIGKILL. `ray stop` would end
# EVERY Ray instance of this user on the machine (other people's private test clusters
# included): use `--all` for that.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/local_head_settings.sh"
if [[ "${1:-}" == "--all" ]]; then
  RAY_BIN="${RAY_BIN:-$(command -v ray || echo "$here/../.venv/bin/ray")}"
  exec "$RAY_BIN" stop
fi
if [[ ! -s "$STATE_FILE" ]]; then
  echo "no recorded head session ($STATE_FILE); nothing stopped (use --all for 'ray stop')" >&2
  exit 1
fi
session="$(cat "$STATE_FILE")"
descendants() {  # the pids given and all their children, grandchildren, ...
  local todo="$*" all="" p
  while [[ -n "${todo// /}" ]]; do
    all="$all $todo"
    todo="$(for p in $todo; do pgrep -P "$p" || true; done | tr '\n' ' ')"
  done
  echo "$all"
}
head_pids() {  # processes naming the session, the dashboard port's owner, and their children
  local dash roots
  dash="$(ss -ltnpH "sport = :$DASH_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 || true)"
  roots="$( { pgrep -f -- "$session" || true; echo "$dash"; } | grep -v '^$' | tr '\n' ' ')"
  descendants $roots | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' '
}
pids="$(head_pids)"
if [[ -z "${pids// /}" ]]; then
  echo "head session $session is not running"
else
  echo "stopping head session $session: pids $pids"
  kill $pids 2>/dev/null || true
  deadline=$((SECONDS + ${STOP_TIMEOUT:-16}))
  still() { for p in $pids; do kill -0 "$p" 2>/dev/null && echo -n "$p "; done; true; }
  alive="$(still)"
  while [[ -n "${alive// /}" && $SECONDS -lt $deadline ]]; do
    sleep 0.5
    alive="$(still)"
  done
  if [[ -n "${alive// /}" ]]; then
    echo "still running after ${STOP_TIMEOUT:-16} s: pids $alive; sending SIGKILL"
    kill -9 $alive 2>/dev/null || true
    sleep 1
  fi
  for port in "$GCS_PORT" "$DASH_PORT"; do  # return only when the ports are free again
    for _ in $(seq 20); do
      ss -ltnH "sport = :$port" 2>/dev/null | grep -q . || break
      sleep 0.5
    done
  done
  echo "stopped; nothing of session $session is left"
fi
rm -f "$STATE_FILE"
