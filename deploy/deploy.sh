#!/usr/bin/env bash
# Register every deployment of prefect.yaml (run from anywhere; deploys from the repo root).
#   deploy/deploy.sh              -> prefect deploy --all
#   deploy/deploy.sh NAME...      -> only those, e.g. extract-and-train/demo
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"
if [[ $# -gt 0 ]]; then
  # Names first, before setup.sh changes the server: prefect deploy skips an unknown one with a warning.
  known="$("$PY" -m deploy.deployment_names)"
  for n in "$@"; do
    if ! grep -qxF -- "$n" <<<"$known"; then
      log "no deployment $n in prefect.yaml; its deployments:"; sed 's/^/  /' <<<"$known" >&2; exit 2
    fi
  done
fi
"$(dirname "${BASH_SOURCE[0]}")/setup.sh"
if [[ $# -eq 0 ]]; then
  "$PREFECT" --no-prompt deploy --all
else
  args=(); for n in "$@"; do args+=(--name "$n"); done
  "$PREFECT" --no-prompt deploy "${args[@]}"
fi
