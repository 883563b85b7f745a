#!/usr/bin/env bash
# Shared settings and helpers of the deploy/ scripts (sourced, not run). The Prefect settings come
# from deploy/env.sh (overridable from the environment: CLIPAE_LOCAL_DIR, CLIPAE_PREFECT_HOST/PORT,
# CLIPAE_DATABASE_URL, CLIPAE_AUTH_STRING, PREFECT_*); runtime files (SQLite DB, logs, pid files)
# live in .prefect-local/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/deploy/env.sh"  # PREFECT_HOME, PREFECT_API_URL, auth, ...: the same as in a user's shell
VENV="$REPO_ROOT/.venv"  # made by deploy/install.sh
PY="$VENV/bin/python"
PREFECT="$VENV/bin/prefect"
LOCAL_DIR="$CLIPAE_LOCAL_DIR"
LOG_DIR="$LOCAL_DIR/logs"
RUN_DIR="$LOCAL_DIR/run"
POOL=clipae-process  # the work pool prefect.yaml deploys to
HOST="$CLIPAE_PREFECT_HOST"
PORT="$CLIPAE_PREFECT_PORT"
mkdir -p "$LOG_DIR" "$RUN_DIR"

is_loopback() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" || "$1" == "::1" ]]; }

# The API of the server this checkout starts (a server bound to all interfaces answers on loopback).
LOCAL_API_URL="http://$([[ "$HOST" == "0.0.0.0" || "$HOST" == "::" ]] && echo 127.0.0.1 || echo "$HOST"):$PORT/api"

api_healthy() {  # api_healthy [URL]: the API at URL (default $PREFECT_API_URL) answers its health check
  local auth=()
  [[ -n "${PREFECT_API_AUTH_STRING:-}" ]] && auth=(-u "$PREFECT_API_AUTH_STRING")
  curl -fsS -m 5 "${auth[@]}" "${1:-$PREFECT_API_URL}/health" >/dev/null 2>&1
}

start_time_of() {  # start_time_of PID: the process's start time (clock ticks since boot), or nothing
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
  line="${line##*) }"              # fields 3... after "(command name)", which may hold spaces
  cut -d' ' -f20 <<<"$line"        # field 22: starttime
}

record_pid() {  # record_pid NAME PID: .prefect-local/run/NAME.pid holds "PID STARTTIME"
  echo "$2 $(start_time_of "$2")" >"$RUN_DIR/$1.pid"
}

recorded_pid() {  # recorded_pid NAME: the PID recorded for NAME if that process still runs, else nothing
  # A PID alone is not enough: after a reboot or a SIGKILL it may name another program, which a stop
  # would then kill and a start would take for the running server or worker.
  local f="$RUN_DIR/$1.pid" pid start
  [[ -f "$f" ]] || return 0
  read -r pid start <"$f" || true
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 0
  if [[ -n "$start" ]]; then
    [[ "$(start_time_of "$pid")" == "$start" ]] && echo "$pid"
  elif tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "prefect"; then  # (a pid file of an older version)
    echo "$pid"
  fi
  return 0
}

pid_alive() {  # pid_alive NAME -> true when .prefect-local/run/NAME.pid names our live process
  [[ -n "$(recorded_pid "$1")" ]]
}

hold_lock() {  # hold_lock: one start or stop of this checkout's stack at a time (else both start a server)
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>>"$RUN_DIR/.lock"
  flock 9
}

children_of() {  # children_of PID: its direct children (pgrep, else /proc: slim images lack procps)
  if command -v pgrep >/dev/null 2>&1; then pgrep -P "$1" 2>/dev/null || true; return 0; fi
  local s line ppid
  for s in /proc/[0-9]*/stat; do
    { read -r line <"$s"; } 2>/dev/null || continue
    line="${line##*) }"            # fields after "(command name)", which may hold spaces
    ppid="$(cut -d' ' -f2 <<<"$line")"
    if [[ "$ppid" == "$1" ]]; then s="${s#/proc/}"; echo "${s%/stat}"; fi
  done
  return 0
}

descendants() {  # descendants PID: every process below PID
  local c
  for c in $(children_of "$1"); do echo "$c"; descendants "$c"; done
}

stop_pid() {  # stop_pid NAME: TERM the recorded process group and every process below it, KILL after 20 s
  local f="$RUN_DIR/$1.pid" pid below p
  [[ -f "$f" ]] || return 0
  pid="$(recorded_pid "$1")"  # (nothing for a stale file: its PID is never signalled)
  if [[ -n "$pid" ]]; then
    # The worker starts each flow run in a session of its own: outside its process group, so a stop that
    # signalled the group only left the runs extracting on with no worker and no server.
    below="$(descendants "$pid" | tr '\n' ' ')"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for p in $below; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 1 40); do
      local alive=0
      for p in $pid $below; do if kill -0 "$p" 2>/dev/null; then alive=1; break; fi; done
      [[ $alive == 1 ]] || break
      sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for p in $below; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  rm -f "$f"
}

log() { printf '[clipae-deploy] %s\n' "$*" >&2; }
