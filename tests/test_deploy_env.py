"""deploy/env.sh: what a user sources before `.venv/bin/prefect deployment run ...` gives the prefect CLI
the same server settings as the deploy/ scripts (common.sh), without changing how their shell behaves."""
from __future__ import annotations

import os
import subprocess

from clipae import REPO_ROOT

SHOW = 'echo "$PREFECT_API_URL|$PREFECT_HOME|$PREFECT_UI_URL|$-"'


def _bash(script: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CLIPAE_"))}
    out = subprocess.run(["bash", "-c", script], cwd="/", env={**clean, **env}, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_sourcing_env_sh_points_the_cli_at_the_local_server():
    api, home, ui, flags = _bash(f"source {REPO_ROOT}/deploy/env.sh; {SHOW}").split("|")
    assert api == "http://127.0.0.1:4200/api" and ui == "http://127.0.0.1:4200"
    assert home == str(REPO_ROOT / ".prefect-local" / "home")
    assert "e" not in flags and "u" not in flags, "must not switch on errexit/nounset in the user's shell"


def test_deploy_scripts_use_the_same_settings_and_the_environment_wins(tmp_path):
    local = str(tmp_path / "local")  # common.sh creates its logs/ and run/ there
    user = _bash(f"source {REPO_ROOT}/deploy/env.sh; {SHOW}", CLIPAE_LOCAL_DIR=local)
    scripts = _bash(f"source {REPO_ROOT}/deploy/common.sh; {SHOW}", CLIPAE_LOCAL_DIR=local)
    assert user.split("|")[:3] == scripts.split("|")[:3] and user.split("|")[1] == f"{local}/home"
    api = _bash(f"source {REPO_ROOT}/deploy/env.sh; {SHOW}", CLIPAE_PREFECT_PORT="4300").split("|")[0]
    assert api == "http://127.0.0.1:4300/api"
    api = _bash(f"source {REPO_ROOT}/deploy/env.sh; {SHOW}", PREFECT_API_URL="http://remote:4200/api").split("|")[0]
    assert api == "http://remote:4200/api"


def test_values_derived_by_an_earlier_source_follow_a_new_port():
    """A shell that sourced env.sh exports its derived URL; `CLIPAE_PREFECT_PORT=4300 deploy/server.sh start`
    from that shell must use 4300 (a value the user set explicitly still wins, as above)."""
    script = (f"source {REPO_ROOT}/deploy/env.sh; "
              f"CLIPAE_PREFECT_PORT=4300 bash -c 'source {REPO_ROOT}/deploy/env.sh; {SHOW}'")
    assert _bash(script).split("|")[0] == "http://127.0.0.1:4300/api"
