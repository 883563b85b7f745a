"""Prefect tasks: thin wrappers over flows/steps.py adding retries, concurrency and names.

``NO_CACHE``: inputs are live objects (the store, the dataset) and results are cheap to
recompute or already persisted in the store, so Prefect's input hashing is skipped.
"""
from __future__ import annotations

import contextvars
import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.states import Cancelled

from flows import steps
from flows.limits import MissingLimitError, missing_limit_message


def _transient(task, task_run, state) -> bool:
    """Retry only errors that may pass (I/O hiccups, CUDA OOM), never a bad video or bad input."""
    from extractors.errors import VideoError

    try:
        from storage import StoreError
    except ImportError:  # pragma: no cover
        StoreError = ValueError
    exc = state.result(raise_on_failure=False)
    if not isinstance(exc, BaseException):
        return False
    permanent = (VideoError, StoreError, MissingLimitError, ValueError, TypeError, KeyError, FileNotFoundError)
    return not isinstance(exc, permanent)


@task(name="discover-videos", cache_policy=NO_CACHE)
def discover_videos(source: str) -> list[tuple[str, str]]:
    return steps.discover(source)


@task(name="plan-extraction", cache_policy=NO_CACHE)
def plan_extraction(store, videos: list[tuple[str, str]], features: list[str], config=None) -> steps.ExtractionPlan:
    return steps.plan_extraction(store, videos, features, config)


@task(
    name="extract-video",
    task_run_name="extract-{item.video_id}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_transient,
)
def extract_video(item: steps.PlannedVideo, store, config, limit_name: str,
                  cancel: threading.Event | None = None) -> dict[str, Any]:
    # One slot of the device's global concurrency limit per running extraction: the limit's
    # slots (CLIPAE_VIDEOS_PER_GPU) cap the videos on a GPU across all flow runs and workers. A missing GPU
    # limit is an error (strict: no silent oversubscription; the flow creates it before mapping, see
    # flows/limits.py); a missing CPU limit (tests, ad-hoc runs) only makes Prefect log a warning.
    # ``cancel``: set when the flow run is being stopped (run_extraction): a task that was still waiting for a
    # slot then starts nothing, and a running extraction stops at its next window, publishing nothing.
    from extractors.errors import ExtractionCancelled

    try:
        with _slot(limit_name, getattr(item, "video_id", "?"), cancel):
            if cancel is not None and cancel.is_set():
                raise ExtractionCancelled()
            return steps.extract_one(item, store, config, cancel)
    except ExtractionCancelled:  # (Cancelled, not Crashed, in the UI; a returned state is the task's final one)
        return Cancelled(message="its flow run was stopped: nothing of this video was published")
    except ConcurrencySlotAcquisitionError as exc:
        if "must be created" not in str(exc):  # e.g. the server unreachable: transient, retried
            raise
        raise MissingLimitError(missing_limit_message(limit_name)) from exc


#: Seconds a slot's lease lives without renewal (Prefect renews it while the task runs). Short, so a killed
#: run's slot comes back within about a minute instead of Prefect's default 5 minutes.
SLOT_LEASE_SECONDS = 60.0
#: After this long without a slot the task says in its log that it is waiting, and for what.
SLOT_WAIT_NOTICE_SECONDS = 30.0


@contextmanager
def _slot(limit_name: str, video_id: str, cancel: threading.Event | None = None):
    """One slot of ``limit_name``; a wait longer than SLOT_WAIT_NOTICE_SECONDS is logged (a run that only
    waits, e.g. on a slot a killed run still holds, otherwise looks hung). One acquisition, no timeout (a
    timed-out request can leave a granted slot behind until its lease lapses); a timer says it is waiting.
    A failed lease renewal (the server briefly away) is logged, not fatal: ending a running extraction for
    it would lose more than the slot count is worth.

    The acquisition runs in a thread of its own, holding the slot until this context exits, so that the wait
    can end when ``cancel`` is set (the flow run is being stopped): a task blocked in the acquisition kept
    its run alive until the worker SIGKILLed it. A slot granted after that is given back at once."""
    from extractors.errors import ExtractionCancelled

    try:
        log = get_run_logger()
    except Exception:  # noqa: BLE001 -- outside a run (a plain call of the task's function)
        log = logging.getLogger(__name__)
    notice = threading.Timer(SLOT_WAIT_NOTICE_SECONDS, lambda: log.warning(
        f"{video_id}: waiting for a slot of concurrency limit {limit_name!r} (all taken by other extractions; "
        f"`prefect global-concurrency-limit inspect {limit_name}` shows them; a killed run's slot returns when "
        f"its lease lapses, within about {SLOT_LEASE_SECONDS:.0f} s)"))
    notice.daemon = True
    granted, release, over = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with concurrency(limit_name, occupy=1, strict=limit_name.startswith("gpu-"),
                             lease_duration=SLOT_LEASE_SECONDS, raise_on_lease_renewal_failure=False):
                granted.set()
                release.wait()
        except BaseException as e:  # noqa: BLE001 -- handed to the task's thread below
            errors.append(e)
        finally:
            over.set()

    holder = threading.Thread(target=contextvars.copy_context().run, args=(hold,), daemon=True,
                              name=f"slot-{limit_name}-{video_id}")
    notice.start()
    holder.start()
    try:
        while not granted.wait(0.25):
            if over.is_set():  # the acquisition failed
                raise errors[0] if errors else RuntimeError(f"no slot of {limit_name!r} granted")
            if cancel is not None and cancel.is_set():
                raise ExtractionCancelled()
    except BaseException:
        release.set()  # (a slot granted later is given back at once)
        raise
    finally:
        notice.cancel()
    try:
        yield
    finally:
        release.set()
        holder.join()
        if errors:  # (releasing failed: the lease lapses on its own; the video's work is done and kept)
            log.warning(f"{video_id}: releasing the slot of {limit_name!r} failed: {type(errors[0]).__name__}: "
                        f"{errors[0]}")


@task(name="check-store", cache_policy=NO_CACHE)
def check_store(store, dataset, features: list[str], min_train_videos: int) -> steps.StoreCheck:
    return steps.check_store(store, dataset, features, min_train_videos)


@task(name="train", cache_policy=NO_CACHE)
def train(training_cfg, store, dataset, out_dir: Path):
    return steps.train_model(training_cfg, store, dataset, out_dir)


@task(name="predict", cache_policy=NO_CACHE)
def predict(checkpoint: Path, store, dataset, subset: str, device: str) -> dict:
    return steps.predict_detections(checkpoint, store, dataset, subset, device)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(dataset, predictions: dict, subset: str):
    return steps.evaluate(dataset, predictions, subset)
