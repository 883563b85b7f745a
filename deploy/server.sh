#!/usr/bin/env bash
# Local Prefect server: deploy/server.sh start|stop|status
#   default: 127.0.0.1:4200, SQLite in .prefect-local/home; CLIPAE_DATABASE_URL for PostgreSQL.
#   Binding beyond loopback (CLIPAE_PREFECT_HOST=0.0.0.0) requires CLIPAE_AUTH_STRING=user:password.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

server_addr_of() {  # server_addr_of PID: "host:port" from the recorded server's command line, or nothing
  local args host="" port=""
  args="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 0
  [[ "$args" =~ --host\ ([^ ]+) ]] && host="${BASH_REMATCH[1]}"
  [[ "$args" =~ --port\ ([0-9]+) ]] && port="${BASH_REMATCH[1]}"
  [[ -n "$host" && -n "$port" ]] && echo "$host:$port"
  return 0
}

start() {
  local want="$HOST:$PORT" had=""
  hold_lock
  if [[ "$PREFECT_API_URL" != "$LOCAL_API_URL" ]]; then
    log "note: PREFECT_API_URL is $PREFECT_API_URL, not this server's $LOCAL_API_URL: the prefect CLI and workers"
    log "started from this environment talk to that one (unset PREFECT_API_URL to use this server)"
  fi
  [[ -f "$RUN_DIR/server.addr" ]] && had="$(cat "$RUN_DIR/server.addr")"
  if pid_alive server && [[ -z "$had" ]]; then  # (started before server.addr existed: ask its command line)
    had="$(server_addr_of "$(recorded_pid server)")"
  fi
  if pid_alive server; then
    if [[ -n "$had" && "$had" != "$want" ]]; then
      # (another address is another server: never stop the one this checkout's worker and runs use)
      log "this checkout's server already runs on $had, not $want; stop it first (deploy/server.sh stop stops"
      log "this checkout's server, whatever its port) or keep using it"; exit 2
    fi
    for _ in $(seq 1 12); do  # a loaded server can miss one 5 s health check: give it a minute
      if api_healthy "$LOCAL_API_URL"; then log "server already running at $PREFECT_UI_URL (reused)"; return 0; fi
      sleep 5
    done
    log "the recorded server (pid $(recorded_pid server)) does not answer at $LOCAL_API_URL; restarting it"
  fi
  stop_pid server
  if ! is_loopback "$HOST" && [[ -z "${PREFECT_SERVER_API_AUTH_STRING:-}" ]]; then
    log "refusing to expose the API on $HOST without basic auth: set CLIPAE_AUTH_STRING=user:password"; exit 2
  fi
  if api_healthy "$LOCAL_API_URL"; then
    log "another server already answers at $LOCAL_API_URL; choose CLIPAE_PREFECT_PORT"; exit 2
  fi
  log "starting Prefect server on $HOST:$PORT (log: $LOG_DIR/server.log)"
  # setsid: own process group, so stop can end the server and its children together.
  setsid "$PREFECT" server start --host "$HOST" --port "$PORT" >"$LOG_DIR/server.log" 2>&1 < /dev/null 9>&- &
  record_pid server $!
  echo "$want" >"$RUN_DIR/server.addr"
  for _ in $(seq 1 240); do
    if api_healthy "$LOCAL_API_URL"; then log "server up: $PREFECT_UI_URL"; return 0; fi
    if ! pid_alive server; then
      rm -f "$RUN_DIR/server.pid" "$RUN_DIR/server.addr"  # (a dead PID left there could be reused by anything)
      log "server exited; see $LOG_DIR/server.log"; tail -20 "$LOG_DIR/server.log" >&2; exit 1
    fi
    sleep 0.5
  done
  log "server did not become healthy in 120 s; see $LOG_DIR/server.log"; exit 1
}

case "${1:-start}" in
  start) start ;;
  stop) hold_lock; stop_pid server; rm -f "$RUN_DIR/server.addr"; log "server stopped" ;;
  status)
    if pid_alive server && api_healthy "$LOCAL_API_URL"; then echo "running: $PREFECT_UI_URL"
    elif pid_alive server; then echo "running on $(cat "$RUN_DIR/server.addr" 2>/dev/null || echo 'another address'), not answering at $LOCAL_API_URL"; exit 3
    else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
