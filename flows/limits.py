"""The per-device Prefect global concurrency limits that extraction tasks take a slot of.

``deploy/setup.sh`` creates ``gpu-<i>`` for the GPUs it sees, but it may run where there are none
(a CPU-only server box), so a flow also creates the limit of the GPU it is about to use when it is
missing. An existing limit is never changed: its size is the operator's choice.
"""
from __future__ import annotations

import os

VIDEOS_PER_GPU_ENV = "CLIPAE_VIDEOS_PER_GPU"
DEFAULT_VIDEOS_PER_GPU = 8  # same default as deploy/setup.sh (the H100 setting of BENCHMARKS.md)


class MissingLimitError(RuntimeError):
    """A strict limit does not exist: a setup problem, not a transient one (never retried)."""


def videos_per_gpu() -> int:
    return int(os.environ.get(VIDEOS_PER_GPU_ENV) or DEFAULT_VIDEOS_PER_GPU)


def ensure_gpu_limit(name: str) -> str | None:
    """Create the GPU limit ``name`` with ``$CLIPAE_VIDEOS_PER_GPU`` slots if it does not exist.

    Returns a line for the log when it created one, else None. CPU limits are left alone: a missing
    ``cpu-extract`` only makes Prefect skip the limit (with a warning), as intended for ad-hoc runs.
    """
    if not name.startswith("gpu-"):
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return None
        except ObjectNotFound:
            pass
        slots = videos_per_gpu()
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
        except ObjectAlreadyExists:  # another flow run created it just now
            return None
    return (f"created the missing global concurrency limit {name} with {slots} slots "
            f"(${VIDEOS_PER_GPU_ENV}; deploy/setup.sh creates one per GPU it sees)")


def missing_limit_message(name: str) -> str:
    return (f"Prefect global concurrency limit {name!r} does not exist: create it with deploy/setup.sh (CLIPAE_NUM_GPUS=<gpus> where nvidia-smi is absent) or "
            f"`prefect global-concurrency-limit create {name} --limit {videos_per_gpu()}`")
