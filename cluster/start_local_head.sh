#!/usr/bin/env bash
# Start a single-node Ray head bound to 127.0.0.1 only (GCS, raylet, dashboard, job API).
#
#   cluster/start_local_head.sh            # 2 CPUs, dashboard/job API on 127.0.0.1:8265
#   NUM_CPUS=4 GCS_PORT=6390 DASH_PORT=8266 cluster/start_local_head.sh
#
# Why the environment variable: `--node-ip-address=127.0.0.1` alone lets Ray rewrite the
# address to the host interface and bind the GCS port on all interfaces; with
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 every port stays on loopback (see docs/cluster.md).
# Jobs then run with the Python of the `ray` found first on PATH (use the project venv).
set -euo pipefail
RAY_BIN="${RAY_BIN:-$(command -v ray || true)}"
if [[ -z "$RAY_BIN" ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  RAY_BIN="$here/.venv/bin/ray"
fi
export PATH="$(dirname "$RAY_BIN"):$PATH"   # job drivers' `python` = this environment's
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0
"$RAY_BIN" start --head \
  --node-ip-address=127.0.0.1 \
  --port="${GCS_PORT:-6380}" \
  --dashboard-host=127.0.0.1 --dashboard-port="${DASH_PORT:-8265}" --include-dashboard=true \
  --num-cpus="${NUM_CPUS:-2}" \
  --disable-usage-stats "$@"
# remember this head's session so that stop_local_head.sh ends only its processes
gcs_pid="$(ss -ltnpH "sport = :${GCS_PORT:-6380}" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)"
session=""
if [[ -n "$gcs_pid" ]]; then  # the GCS of THIS head names its session in --log_dir
  session="$(tr '\0' '\n' < /proc/$gcs_pid/cmdline | grep -o 'session_[0-9_-]*' | head -1 || true)"
fi
[[ -z "$session" ]] && session="$(basename "$(readlink -f /tmp/ray/session_latest)")"
echo "$session" > "${STATE_FILE:-/tmp/recmind-ray-head.session}"
echo
echo "Ray head (session $session) on 127.0.0.1:${GCS_PORT:-6380}; job API http://127.0.0.1:${DASH_PORT:-8265}"
echo "listening sockets of this head (all should be 127.0.0.1):"
ss -ltnp 2>/dev/null | grep -E "ray|gcs_server|raylet|dashboard" | awk '{print "  " $4}' | sort -u || true
