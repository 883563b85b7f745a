"""Mark flow runs whose process died as Crashed (`python -m deploy.zombie_automation`, run by deploy/setup.sh).

A flow run killed with its worker (SIGKILL, a machine that rebooted, an OOM kill) cannot report its end and
stays "Running" forever. Flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
(deploy/env.sh: 30); this automation, Prefect's documented recipe for self-hosted servers, moves a run that
sent none for four heartbeat periods (at least ZOMBIE_AFTER_SECONDS) to Crashed. Idempotent: an automation
of that name with the same window is left as it is; one with another window is replaced.
"""
from __future__ import annotations

import os
from datetime import timedelta

NAME = "clipae: crash flow runs without heartbeats"
#: Four missed heartbeats at the 30 s of deploy/env.sh: a busy run is not mistaken for a dead one.
ZOMBIE_AFTER_SECONDS = 120


def zombie_after_seconds() -> int:
    """Four heartbeat periods of this environment's PREFECT_FLOWS_HEARTBEAT_FREQUENCY, at least 120 s."""
    try:
        freq = int(os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") or 30)
    except ValueError:
        freq = 30
    return max(ZOMBIE_AFTER_SECONDS, 4 * freq)


def ensure_zombie_automation() -> str:
    """Create the automation (or replace one of its name with another window); returns what was done."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    after = zombie_after_seconds()
    replaced = ""
    try:
        old = Automation.read(name=NAME)
    except ValueError:  # (read raises ValueError when there is none of that name)
        old = None
    if old is not None:
        if getattr(old.trigger, "within", None) == timedelta(seconds=after):
            return f"automation {NAME!r} exists"
        old.delete()
        replaced = f" (replaced one with another window: {getattr(old.trigger, 'within', '?')})"
    Automation(
        name=NAME,
        description=f"A flow run that sent no heartbeat for {after} s (its process died) is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after} s: its process died "
                                            "(worker killed, machine restarted, out of memory)")],
    ).create()
    return f"created automation {NAME!r} (runs without a heartbeat for {after} s become Crashed){replaced}"


if __name__ == "__main__":
    print(ensure_zombie_automation())
