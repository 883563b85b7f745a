#!/usr/bin/env bash
# The README's main command: from a fresh checkout to a localized, evaluated demo run.
#   deploy/demo.sh         install (if needed), generate the demo videos, start a local Prefect
#                          server (SQLite) + process worker, deploy, run extract-and-train/demo,
#                          print the mAP table and the UI address. Idempotent: reuses a running
#                          server/worker, the venv, the demo videos and already-extracted features.
#   deploy/demo.sh stop    stop the server and worker it started.
# Logs: .prefect-local/logs/. Everything stays on 127.0.0.1.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
cd "$REPO_ROOT"

if [[ "${1:-}" == "stop" ]]; then
  "$HERE/worker.sh" stop; "$HERE/server.sh" stop; exit 0
fi

# 1. System + Python dependencies (the same installer as the test command; a no-op when done).
bash "$HERE/install.sh"

source "$HERE/common.sh"
if [[ "$PREFECT_API_URL" != "$LOCAL_API_URL" ]]; then
  # (the deployment and its run would go to that server, while the worker started here polls this one)
  log "PREFECT_API_URL is set to $PREFECT_API_URL; the demo runs on its own local server at $LOCAL_API_URL."
  log "unset PREFECT_API_URL (or set it to $LOCAL_API_URL) and run again"; exit 2
fi

# 2. The self-made demo dataset (real H.264/AAC MP4s + ActivityNet-style annotations) in
#    <repo>/demo_data, where configs/datasets/demo.yaml and the demo deployment read it.
"$VENV/bin/clipae" demo generate --out "$REPO_ROOT/demo_data"

# 3. Local server (SQLite under .prefect-local/), pool + limits, deployments, worker.
"$HERE/server.sh" start
"$HERE/deploy.sh" extract-and-train/demo
"$HERE/worker.sh" start

# 4. Run the demo deployment and wait for it.
echo "[demo] running extract-and-train/demo (worker log: $LOG_DIR/worker.log)" >&2
out="$LOG_DIR/demo-run.log"
run_id_of() { grep -oE 'UUID: [0-9a-f-]{36}' "$out" 2>/dev/null | head -1 | awk '{print $2}'; }
interrupted() {  # Ctrl-C stops watching, not the run: say where it goes on and how to stop it
  local id; id="$(run_id_of)"
  echo >&2
  if [[ -n "$id" ]]; then
    echo "[demo] stopped watching; flow run $id goes on in the worker ($PREFECT_UI_URL/runs/flow-run/$id)." >&2
    echo "[demo] cancel it: source deploy/env.sh && $PREFECT flow-run cancel $id   (or deploy/demo.sh stop)" >&2
  else
    echo "[demo] stopped before the flow run was created" >&2
  fi
  exit 130
}
trap interrupted INT
set +e
"$PREFECT" deployment run extract-and-train/demo --watch "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
trap - INT
run_id="$(run_id_of)"

# 5. Results: mAP table from the run record, and where to look in the UI.
echo
if [[ $rc -eq 0 && -n "$run_id" ]]; then
  "$VENV/bin/clipae" runs show "$run_id"
  echo
  echo "Prefect UI:   $PREFECT_UI_URL/runs/flow-run/$run_id   (Artifacts tab: mAP table, summary, plots)"
else
  echo "[demo] the flow run did not complete (exit $rc); see $out and $LOG_DIR/worker.log" >&2
  echo "Prefect UI:   $PREFECT_UI_URL"
  exit 1
fi
echo "Stop the local server and worker with: deploy/demo.sh stop"
