"""Mark flow runs whose process died as Crashed (`python -m deploy.zombie_automation`, run by deploy/setup.sh).

A flow run killed with its worker (SIGKILL, a machine that rebooted, an OOM kill) cannot report its end and
stays "Running" forever. Flow runs send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
(deploy/env.sh: 30); this automation, Prefect's documented recipe for self-hosted servers, moves a run that
sent none for ZOMBIE_AFTER_SECONDS to Crashed. Idempotent: an automation of that name is left as it is.
"""
from __future__ import annotations

from datetime import timedelta

NAME = "clipae: crash flow runs without heartbeats"
#: Four missed heartbeats at the 30 s of deploy/env.sh: a busy run is not mistaken for a dead one.
ZOMBIE_AFTER_SECONDS = 120


def ensure_zombie_automation() -> str:
    """Create the automation unless one of its name exists; returns what was done, for the setup log."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=NAME)
        return f"automation {NAME!r} exists"
    except ValueError:  # (read raises ValueError when there is none of that name)
        pass
    Automation(
        name=NAME,
        description=f"A flow run that sent no heartbeat for {ZOMBIE_AFTER_SECONDS} s (its process died) is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {ZOMBIE_AFTER_SECONDS} s: its process died "
                                            "(worker killed, machine restarted, out of memory)")],
    ).create()
    return f"created automation {NAME!r} (runs without a heartbeat for {ZOMBIE_AFTER_SECONDS} s become Crashed)"


if __name__ == "__main__":
    print(ensure_zombie_automation())
