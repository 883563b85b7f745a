"""A throwaway local Prefect stack (server + process worker + deployments) for tests and benchmarks.

Drives the same deploy/*.sh scripts users run, with a private ``CLIPAE_LOCAL_DIR`` (SQLite
DB, logs, pid files) and a free loopback port, so it never touches a developer's server.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from clipae import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
VENV_BIN = REPO_ROOT / ".venv" / "bin"  # where deploy/install.sh puts it (the scripts use it too)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalStack:
    root: Path
    port: int = field(default_factory=free_port)
    started: bool = False

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            CLIPAE_LOCAL_DIR=str(self.root / "local"),
            CLIPAE_PREFECT_PORT=str(self.port),
            PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
            PREFECT_HOME=str(self.root / "local" / "home"),
            PREFECT_API_URL=self.api_url,
            PREFECT_UI_URL=self.ui_url,
            PREFECT_LOGGING_LEVEL="INFO",
        )
        return env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sh(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def start(self, deployments: tuple[str, ...] = ()) -> "LocalStack":
        """Server, pool + limits, ``prefect deploy`` (all, or the named ones), worker."""
        self.sh(str(DEPLOY / "server.sh"), "start")
        self.started = True
        self.sh(str(DEPLOY / "deploy.sh"), *deployments)
        self.sh(str(DEPLOY / "worker.sh"), "start")
        return self

    def stop(self) -> None:
        if self.started:
            self.sh(str(DEPLOY / "worker.sh"), "stop", check=False)
            self.sh(str(DEPLOY / "server.sh"), "stop", check=False)
            self.started = False

    def run_deployment(self, name: str, params: dict, timeout: float = 900) -> tuple[str, subprocess.CompletedProcess]:
        """``prefect deployment run NAME --params JSON --watch``; returns (flow-run id, process)."""
        proc = self.sh(str(VENV_BIN / "prefect"), "deployment", "run", name, "--params", json.dumps(params),
                       "--watch", "--watch-timeout", str(int(timeout)), timeout=timeout + 60, check=False)
        run_id = next((line.split("UUID:")[1].strip() for line in proc.stdout.splitlines() if "UUID:" in line), "")
        return run_id, proc

    def log(self, name: str) -> str:
        p = self.root / "local" / "logs" / f"{name}.log"
        return p.read_text()[-5000:] if p.exists() else ""


_shared: dict[str, object] = {}
_lock = threading.Lock()


def shared_demo_run(make_params) -> dict:
    """Start one stack per test session and run ``extract-and-train/demo`` once in it.

    ``make_params(tmp_dir) -> dict`` builds the run parameters (small demo data). Test files
    that both need a completed demo run (API checks, browser checks) share it; the stack is
    stopped at interpreter exit.
    """
    with _lock:
        if "result" in _shared:
            return _shared["result"]  # type: ignore[return-value]
        root = Path(tempfile.mkdtemp(prefix="clipae-e2e-"))
        stack = LocalStack(root)
        atexit.register(_cleanup, stack, root)
        stack.start()
        params = make_params(root)
        run_id, proc = stack.run_deployment("extract-and-train/demo", params)
        result = {"stack": stack, "run_id": run_id, "proc": proc, "params": params, "root": root}
        _shared["result"] = result
        return result


def _cleanup(stack: LocalStack, root: Path) -> None:
    try:
        stack.stop()
    finally:
        for p in root.rglob("*"):  # run records are read-only by design
            try:
                p.chmod(0o755 if p.is_dir() else 0o644)
            except OSError:
                pass
        shutil.rmtree(root, ignore_errors=True)
