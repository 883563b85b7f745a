#!/usr/bin/env bash
# Fresh-machine install (Debian or Ubuntu): system packages (ffmpeg, curl, Python's venv module;
# with --browser a Chromium for the optional UI test), the virtual environment at <repo>/.venv, and
# the project in editable mode with its test extra. Idempotent.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

want_browser=0
[[ "${1:-}" == "--browser" ]] && want_browser=1

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
apt_updated=0
apt_update() { ((apt_updated)) || { $sudo apt-get update -qq >/dev/null; apt_updated=1; }; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  echo "[install] apt-get install ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

apt_candidate() {  # apt_candidate NAME...: the first package apt can install (names differ per distro; apt_update first)
  for pkg in "$@"; do
    # (not grep -q: it exits at the first match, apt-cache dies of SIGPIPE and pipefail fails the test)
    if LC_ALL=C apt-cache policy "$pkg" 2>/dev/null | grep 'Candidate: [^(]' >/dev/null; then echo "$pkg"; return 0; fi
  done
  return 1
}

command -v ffmpeg >/dev/null 2>&1 || apt_install ffmpeg
command -v curl >/dev/null 2>&1 || apt_install curl

PYTHON="${PYTHON:-python3}"
# A .venv whose pip does not run is broken (e.g. left by `python3 -m venv` failing at ensurepip on a
# machine without python3-venv): rebuild it rather than reuse it.
venv_ok() { [[ -x .venv/bin/python ]] && .venv/bin/python -m pip --version >/dev/null 2>&1; }
# Debian and Ubuntu ship venv's pip bootstrap (ensurepip) separately: python3.X-venv / python3-venv.
if ! venv_ok && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  apt_update
  apt_install "$(apt_candidate "python$pyver-venv" python3-venv || echo python3-venv)"
fi

# The browser only serves tests/test_ui_browser.py, which is skipped without one: Debian packages
# `chromium`, Ubuntu `chromium-browser` (a snap wrapper, which fails where snapd cannot run).
if ((want_browser)) && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  # Tried twice: a mirror hiccup during its ~100 MB of packages should not cost the test.
  if ! { apt_update && browser="$(apt_candidate chromium chromium-browser)" \
         && { apt_install "$browser" || { sleep 5; apt_install "$browser"; }; }; }; then
    echo "[install] no Chromium installed: tests/test_ui_browser.py will be skipped" >&2
  fi
fi

if ! venv_ok; then
  echo "[install] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv --clear .venv
  rm -f .venv/.clipae-installed
fi
# Re-install only when pyproject.toml changed since the last successful install.
stamp=".venv/.clipae-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "[install] pip install -e '.[test]' (torch, prefect, zarr, open_clip, ...; a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
echo "[install] ready: $(.venv/bin/python -c 'import torch, prefect, zarr; print(f"torch {torch.__version__}, prefect {prefect.__version__}, zarr {zarr.__version__}")')"
