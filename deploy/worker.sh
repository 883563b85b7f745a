#!/usr/bin/env bash
# Process worker polling the clipae work pool: deploy/worker.sh start|stop|status
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# What a worker passes on to its flow runs: a running worker started with other values is not reused
# (its runs would write records elsewhere, or talk to another server).
worker_settings() {
  printf '%s\n' "PREFECT_API_URL=$PREFECT_API_URL" "CLIPAE_RUNS_DIR=${CLIPAE_RUNS_DIR:-}" \
    "CLIPAE_WEIGHTS_DIR=${CLIPAE_WEIGHTS_DIR:-}" "CLIPAE_EXTRACT_WORKERS=${CLIPAE_EXTRACT_WORKERS:-}"
}

case "${1:-start}" in
  start)
    hold_lock
    if pid_alive worker; then
      if [[ -f "$RUN_DIR/worker.env" ]] && ! diff -q <(worker_settings) "$RUN_DIR/worker.env" >/dev/null; then
        log "the running worker (pid $(recorded_pid worker)) was started with other settings:"
        { diff <(worker_settings) "$RUN_DIR/worker.env" || true; } | sed -n 's/^> /  running: /p; s/^< /  wanted:  /p' >&2
        log "stop it first (deploy/worker.sh stop; its flow runs stop too) or use its settings"; exit 2
      fi
      log "worker already running (reused)"; exit 0
    fi
    if ! api_healthy; then
      log "warning: no Prefect server answers at $PREFECT_API_URL (deploy/server.sh start); the worker keeps trying"
    fi
    log "starting process worker on pool $POOL (log: $LOG_DIR/worker.log)"
    cd "$REPO_ROOT"
    setsid "$PREFECT" worker start --pool "$POOL" --type process --name "clipae-$(hostname)-$$" \
      >"$LOG_DIR/worker.log" 2>&1 < /dev/null 9>&- &
    record_pid worker $!
    worker_settings >"$RUN_DIR/worker.env"
    ;;
  stop)
    hold_lock
    # (Prefect's worker takes its time over SIGTERM: after 20 s it is killed, with the flow runs below it)
    if pid_alive worker; then log "stopping the worker and its flow runs (up to 20 s)"; fi
    stop_pid worker; rm -f "$RUN_DIR/worker.env"; log "worker stopped" ;;
  status) if pid_alive worker; then echo running; else echo stopped; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
