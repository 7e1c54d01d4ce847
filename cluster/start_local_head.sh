#!/usr/bin/env bash
# Start a single-node Ray head bound to 127.0.0.1 only (GCS, raylet, dashboard, job API).
#
#   cluster/start_local_head.sh            # 2 CPUs, GCS 127.0.0.1:6380, dashboard/job API :8265
#   NUM_CPUS=4 GCS_PORT=6390 DASH_PORT=8266 cluster/start_local_head.sh
#
# Per-user settings (environment; docs/cluster.md § 1): GCS_PORT (6380), DASH_PORT (8265),
# NUM_CPUS (2), STATE_FILE (${XDG_RUNTIME_DIR:-/tmp}/recmind-ray-head-$USER-$GCS_PORT.session:
# which head stop_local_head.sh stops). Two users on one machine pick different ports.
#
# Why the environment variable: `--node-ip-address=127.0.0.1` alone lets Ray rewrite the
# address to the host interface and bind the GCS port on all interfaces; with
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 every port stays on loopback (see docs/cluster.md).
# Jobs then run with the Python of the `ray` found first on PATH (use the project venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/local_head_settings.sh"
RAY_BIN="${RAY_BIN:-$(command -v ray || true)}"
if [[ -z "$RAY_BIN" ]]; then
  RAY_BIN="$here/../.venv/bin/ray"
fi
export PATH="$(dirname "$RAY_BIN"):$PATH"   # job drivers' `python` = this environment's
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0
for port in "$GCS_PORT" "$DASH_PORT"; do
  if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
    echo "port $port is already in use (another head?); choose GCS_PORT / DASH_PORT" >&2
    exit 1
  fi
done
"$RAY_BIN" start --head \
  --node-ip-address=127.0.0.1 \
  --port="$GCS_PORT" \
  --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" --include-dashboard=true \
  --num-cpus="$NUM_CPUS" \
  --disable-usage-stats "$@"
# remember this head's session so that stop_local_head.sh ends only its processes
gcs_pid="$(ss -ltnpH "sport = :$GCS_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)"
session=""
if [[ -n "$gcs_pid" ]]; then  # the GCS of THIS head names its session in --log_dir
  session="$(tr '\0' '\n' < /proc/$gcs_pid/cmdline | grep -o 'session_[0-9_-]*' | head -1 || true)"
fi
[[ -z "$session" ]] && session="$(basename "$(readlink -f /tmp/ray/session_latest)")"
mkdir -p "$(dirname "$STATE_FILE")"
echo "$session" > "$STATE_FILE"
echo
echo "Ray head (session $session) on 127.0.0.1:$GCS_PORT; dashboard + job API http://127.0.0.1:$DASH_PORT"
echo "state file: $STATE_FILE"
echo "listening sockets of this head (all should be 127.0.0.1):"
"$here/check_local_head.sh" || true
