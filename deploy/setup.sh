#!/usr/bin/env bash
# Idempotent server-side setup: the process work pool and one global concurrency limit
# per GPU (gpu-0, gpu-1, ...: CLIPAE_VIDEOS_PER_GPU videos extracted at once per GPU, default 8,
# the setting measured on an H100 in BENCHMARKS.md, ~25 GB peak) plus cpu-extract. GPUs are counted
# here (nvidia-smi, or CLIPAE_NUM_GPUS); where this machine has none, each flow run creates the gpu-N
# it uses (flows/limits.py, same default). Also the automation that marks flow runs whose process died
# (no heartbeat for 2 minutes) Crashed (deploy/zombie_automation.py).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ! api_healthy; then
  log "no Prefect server answers at $PREFECT_API_URL: start one with deploy/server.sh start (or set PREFECT_API_URL)"
  exit 2
fi

quietly() {  # quietly ARGS...: prefect ARGS, its output shown only if it fails ("already exists": a concurrent setup won)
  local out
  if out="$("$PREFECT" "$@" 2>&1)"; then return 0; fi
  if grep -qi "already exists" <<<"$out"; then return 0; fi
  log "prefect $* failed:"; printf '%s\n' "$out" | tail -20 >&2; exit 1
}

if "$PREFECT" work-pool inspect "$POOL" >/dev/null 2>&1; then
  log "work pool $POOL exists"
else
  quietly work-pool create "$POOL" --type process
  log "created process work pool $POOL"
fi

ensure_limit() {  # ensure_limit NAME SLOTS [RESET]: create it; an existing one is set to SLOTS only if RESET=1
  if "$PREFECT" global-concurrency-limit inspect "$1" >/dev/null 2>&1; then
    if [[ "${3:-0}" == 1 ]]; then
      quietly global-concurrency-limit update "$1" --limit "$2"
      log "concurrency limit $1 exists, set to limit $2"
    else
      log "concurrency limit $1 exists (kept as is; set its variable to change it)"
    fi
  else
    quietly global-concurrency-limit create "$1" --limit "$2"
    log "created concurrency limit $1 (limit $2)"
  fi
}

gpus="${CLIPAE_NUM_GPUS:-}"
if [[ -z "$gpus" ]]; then
  gpus="$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)"
fi
# An operator's explicit CLIPAE_VIDEOS_PER_GPU / CLIPAE_CPU_EXTRACT_SLOTS also updates existing limits.
for ((i = 0; i < ${gpus:-0}; i++)); do
  ensure_limit "gpu-$i" "${CLIPAE_VIDEOS_PER_GPU:-8}" "$([[ -n "${CLIPAE_VIDEOS_PER_GPU:-}" ]] && echo 1)"
done
ensure_limit cpu-extract "${CLIPAE_CPU_EXTRACT_SLOTS:-1}" "$([[ -n "${CLIPAE_CPU_EXTRACT_SLOTS:-}" ]] && echo 1)"

# Flow runs whose process died (worker killed, machine restarted) become Crashed, not "Running" forever.
(cd "$REPO_ROOT" && "$PY" -m deploy.zombie_automation) | while read -r line; do log "$line"; done
