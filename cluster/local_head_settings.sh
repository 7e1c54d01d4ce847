# Settings shared by start_local_head.sh, stop_local_head.sh and check_local_head.sh
# (sourced). Override any of them in the environment, per user.
GCS_PORT="${GCS_PORT:-6380}"
DASH_PORT="${DASH_PORT:-8265}"
NUM_CPUS="${NUM_CPUS:-2}"
STATE_FILE="${STATE_FILE:-${XDG_RUNTIME_DIR:-/tmp}/recmind-ray-head-${USER:-$(id -un)}-${GCS_PORT}.session}"
