#!/usr/bin/env bash
# Stop the Ray processes started by cluster/start_local_head.sh on this machine.
# Note: `ray stop` stops every Ray node started with `ray start` by this user here.
set -euo pipefail
RAY_BIN="${RAY_BIN:-$(command -v ray || echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/ray")}"
"$RAY_BIN" stop "$@"
