"""End to end on a real local stack: deploy/*.sh start a Prefect server (SQLite, free loopback port) and a
process worker, `prefect deploy --all` registers prefect.yaml, `prefect deployment run extract-and-train/demo`
runs to Completed in the worker, and its artifacts are read back over the API."""
from __future__ import annotations

import json

import pytest

from deploy.local_stack import shared_demo_run

from flow_fixtures import tiny_run_parameters


@pytest.fixture(scope="module")
def demo_run():
    result = shared_demo_run(tiny_run_parameters)
    proc = result["proc"]
    assert proc.returncode == 0, (
        f"deployment run failed\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}\n"
        f"worker log:\n{result['stack'].log('worker')}"
    )
    return result


@pytest.mark.slow
def test_all_deployments_are_registered_with_the_pull_step(demo_run):
    import httpx

    stack = demo_run["stack"]
    r = httpx.post(f"{stack.api_url}/deployments/filter", json={}, timeout=30)
    r.raise_for_status()
    deps = {}
    flows = {f["id"]: f["name"] for f in httpx.post(f"{stack.api_url}/flows/filter", json={}, timeout=30).json()}
    for d in r.json():
        deps[f"{flows[d['flow_id']]}/{d['name']}"] = d
    assert {"extract-and-train/demo", "extract-and-train/thumos", "extract-and-train/activitynet12",
            "reextract/thumos"} <= set(deps)
    pull = deps["extract-and-train/demo"]["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    from clipae import REPO_ROOT

    assert pull["directory"] == str(REPO_ROOT)
    assert deps["reextract/thumos"]["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert deps["extract-and-train/demo"]["work_pool_name"] == "clipae-process"

    # setup.sh's automation: flow runs whose process died (no heartbeat) become Crashed
    from deploy.zombie_automation import NAME, ZOMBIE_AFTER_SECONDS

    autos = httpx.post(f"{stack.api_url}/automations/filter", json={}, timeout=30).json()
    zombie = [a for a in autos if a["name"] == NAME]
    assert len(zombie) == 1 and zombie[0]["enabled"], [a["name"] for a in autos]
    assert zombie[0]["trigger"]["within"] == ZOMBIE_AFTER_SECONDS and zombie[0]["trigger"]["posture"] == "Proactive"
    assert zombie[0]["actions"][0]["state"] == "CRASHED"
    # and the stack's settings that make slots survive a server restart and runs send heartbeats
    assert (stack.root / "local" / "run" / "server.addr").read_text().strip() == f"127.0.0.1:{stack.port}"
    assert (stack.root / "local" / "home" / "concurrency_leases").is_dir()  # (the run's extraction slots)


@pytest.mark.slow
def test_demo_deployment_completes_in_the_worker_and_publishes_artifacts(demo_run):
    import httpx

    stack, run_id = demo_run["stack"], demo_run["run_id"]
    assert run_id
    fr = httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=30).json()
    assert fr["state"]["type"] == "COMPLETED"
    assert fr["work_pool_name"] == "clipae-process"
    arts = httpx.post(f"{stack.api_url}/artifacts/filter",
                      json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}, timeout=30).json()
    by_key = {a["key"]: a for a in arts if a["key"]}
    table = by_key["extract-and-train-demo-map"]
    assert table["type"] == "table"
    rows = json.loads(table["data"])
    assert rows[-1]["tIoU"] == "avg" and len(rows) == 8  # 7 THUMOS-style thresholds + average
    assert float(by_key["extract-and-train-demo-extraction-progress"]["data"]) == pytest.approx(100.0)
    summary = by_key["extract-and-train-demo-summary"]["data"]
    assert "store fingerprint" in summary and "random initialisation" in summary
    assert "data:image/png;base64," in by_key["extract-and-train-demo-plots"]["data"]
    link = by_key["extract-and-train-demo-run-record"]["data"]
    record_dir = link.split("(")[-1].rstrip(")").removeprefix("file://") if link.startswith("[") else link
    from pathlib import Path

    records = list((Path(demo_run["params"]["runs_dir"])).glob(f"*/{run_id}/record.json"))
    assert len(records) == 1 and str(records[0].parent) in record_dir
    assert json.loads(records[0].read_text())["status"] == "completed"
