"""deploy/*.sh without a server: pid files are trusted only for our own processes, names and the server are
checked before anything changes. (The scripts with a real server: tests/test_e2e_prefect.py.)"""
from __future__ import annotations

import os
import subprocess
import sys

from clipae import REPO_ROOT
from deploy.local_stack import free_port

DEPLOY = REPO_ROOT / "deploy"


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CLIPAE_"))}
    env.update(CLIPAE_LOCAL_DIR=str(tmp_path / "local"), CLIPAE_PREFECT_PORT=str(free_port()))
    return subprocess.run(["bash", *args], cwd="/", env=env, capture_output=True, text=True, timeout=120)


def test_a_pid_file_naming_another_program_is_never_reused_nor_signalled(tmp_path):
    """After a reboot or a SIGKILL the recorded PID may belong to anything: `worker.sh start` took it for the
    worker ("reused") and `demo.sh stop` killed it."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "local" / "run"
        run.mkdir(parents=True)
        for content in (f"{other.pid}\n", f"{other.pid} 12345\n"):  # (older format; a wrong start time)
            (run / "worker.pid").write_text(content)
            status = _run(tmp_path, str(DEPLOY / "worker.sh"), "status")
            assert status.returncode == 3 and status.stdout.strip() == "stopped"
            assert _run(tmp_path, str(DEPLOY / "worker.sh"), "stop").returncode == 0
            assert other.poll() is None, "an unrelated process was signalled"
    finally:
        other.kill()
        other.wait()


def test_deploy_checks_names_and_the_server_before_changing_anything(tmp_path):
    names = subprocess.run([sys.executable, "-m", "deploy.deployment_names"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == ["extract-and-train/demo", "extract-and-train/thumos", "extract-and-train/activitynet12",
                     "reextract/thumos"]
    typo = _run(tmp_path, str(DEPLOY / "deploy.sh"), "extract-and-train/demo", "extract-and-train/thumoss")
    assert typo.returncode == 2 and "no deployment extract-and-train/thumoss in prefect.yaml" in typo.stderr
    assert "reextract/thumos" in typo.stderr
    nobody = _run(tmp_path, str(DEPLOY / "deploy.sh"), "extract-and-train/demo")
    assert nobody.returncode == 2 and "no Prefect server answers at http://127.0.0.1:" in nobody.stderr
    assert "Traceback" not in nobody.stderr
