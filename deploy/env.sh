# Prefect settings of this checkout, for your shell and for the deploy/ scripts (which source it):
#   source deploy/env.sh
#   .venv/bin/prefect deployment run extract-and-train/thumos --param device=cuda:1
# Without it the prefect CLI talks to its own ~/.prefect (an ephemeral API), not to the server that
# deploy/server.sh started, and finds no deployments. Only sets variables: safe in an interactive shell.
# Values already in the environment win (e.g. PREFECT_API_URL of a remote server).

_clipae_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
# Where the server listens and keeps its files (also read by deploy/common.sh).
CLIPAE_LOCAL_DIR="${CLIPAE_LOCAL_DIR:-$_clipae_root/.prefect-local}"
CLIPAE_PREFECT_HOST="${CLIPAE_PREFECT_HOST:-127.0.0.1}"
CLIPAE_PREFECT_PORT="${CLIPAE_PREFECT_PORT:-4200}"
unset _clipae_root

# _clipae_derive VAR VALUE: export VAR=VALUE unless the user set VAR. A value this file derived
# earlier (remembered in _CLIPAE_DERIVED_VAR, e.g. from a `source deploy/env.sh` in the parent shell)
# is derived again, so `CLIPAE_PREFECT_PORT=4300 deploy/server.sh start` is not held to the old port.
# (eval, not ${!var}: also works when sourced from zsh.)
_clipae_derive() {
  local _cur _mark
  eval "_cur=\${$1:-}; _mark=\${_CLIPAE_DERIVED_$1:-}"
  if [[ -z "$_cur" || "$_cur" == "$_mark" ]]; then
    eval "export $1=\"\$2\" _CLIPAE_DERIVED_$1=\"\$2\""
  fi
}
# A private PREFECT_HOME (profiles + default SQLite DB) per checkout, so nothing touches ~/.prefect.
# PostgreSQL: set CLIPAE_DATABASE_URL, e.g. postgresql+asyncpg://user:pass@db:5432/prefect
_clipae_derive PREFECT_HOME "$CLIPAE_LOCAL_DIR/home"
_clipae_derive PREFECT_API_URL "http://$CLIPAE_PREFECT_HOST:$CLIPAE_PREFECT_PORT/api"
_clipae_derive PREFECT_UI_URL "http://$CLIPAE_PREFECT_HOST:$CLIPAE_PREFECT_PORT"
unset -f _clipae_derive
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_CLI_PROMPT=false
# Concurrency-limit slots are leases; Prefect keeps them in the server's memory by default, so a server
# restart while a run held slots left them taken with nobody to free them (extraction then waited forever).
# On disk (PREFECT_HOME/concurrency_leases) they survive the restart and expire when not renewed.
export PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="${PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE:-prefect.server.concurrency.lease_storage.filesystem}"
# Flow runs send a heartbeat every 30 s; deploy/setup.sh's automation (deploy/zombie_automation.py) marks a
# run Crashed when they stop (a killed worker or machine), instead of leaving it "Running" forever.
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
if [[ -n "${CLIPAE_DATABASE_URL:-}" ]]; then
  export PREFECT_SERVER_DATABASE_CONNECTION_URL="$CLIPAE_DATABASE_URL"
fi

# Basic auth ("user:password"): the server checks PREFECT_SERVER_API_AUTH_STRING, clients
# (CLI, worker, flow runs) send PREFECT_API_AUTH_STRING. One variable sets both.
if [[ -n "${CLIPAE_AUTH_STRING:-}" ]]; then
  export PREFECT_SERVER_API_AUTH_STRING="$CLIPAE_AUTH_STRING"
  export PREFECT_API_AUTH_STRING="$CLIPAE_AUTH_STRING"
elif [[ -n "${PREFECT_SERVER_API_AUTH_STRING:-}" && -z "${PREFECT_API_AUTH_STRING:-}" ]]; then
  export PREFECT_API_AUTH_STRING="$PREFECT_SERVER_API_AUTH_STRING"
fi
