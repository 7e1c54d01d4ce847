#!/usr/bin/env bash
# List the listening TCP sockets of the head recorded in the state file (GCS, raylet, object
# manager, dashboard + job API, agents, workers) and fail when one is not on 127.0.0.1.
#
#   cluster/check_local_head.sh         # exit 0: every socket on loopback; 1: one is not; 2: no head
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/local_head_settings.sh"
if [[ ! -s "$STATE_FILE" ]]; then
  echo "no recorded head ($STATE_FILE)" >&2
  exit 2
fi
session="$(cat "$STATE_FILE")"
pids="$(pgrep -f -- "$session" || true)"
# the dashboard process does not name the session on its command line: add the owner of the
# dashboard port
dash_pid="$(ss -ltnpH "sport = :$DASH_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)"
pids="$(echo $pids $dash_pid | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ')"
all="$pids"
todo="$pids"
while [[ -n "${todo// /}" ]]; do  # their children too (agents, workers)
  todo="$(for p in $todo; do pgrep -P "$p" || true; done | tr '\n' ' ')"
  all="$all $todo"
done
pids="$(echo $all | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ')"
bad=0
lines="$(ss -ltnpH 2>/dev/null || true)"
for pid in $pids; do
  while read -r line; do
    [[ -z "$line" ]] && continue
    addr="$(awk '{print $4}' <<<"$line")"
    name="$(grep -o 'users:(("[^"]*"' <<<"$line" | cut -d'"' -f2)"
    printf '  %-22s %s (pid %s)\n' "$addr" "$name" "$pid"
    [[ "$addr" == 127.0.0.1:* || "$addr" == "[::ffff:127.0.0.1]:"* ]] || bad=1
  done < <(grep "pid=$pid," <<<"$lines" || true)
done
if [[ "$bad" == 1 ]]; then
  echo "a socket of this head is not on 127.0.0.1" >&2
  exit 1
fi
