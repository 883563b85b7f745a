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
    from extractors.errors import ResourceError

    exc = state.result(raise_on_failure=False)
    if not isinstance(exc, BaseException):
        return False
    if isinstance(exc, ResourceError) and exc.stage == "store":  # (a full or read-only disk stays so for 10 s)
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
#: Longest sleep between two slot requests (the server's Retry-After is at most 30 s by default).
SLOT_RETRY_MAX_SECONDS = 30.0


@contextmanager
def _slot(limit_name: str, video_id: str, cancel: threading.Event | None = None):
    """One slot of ``limit_name``; a wait longer than SLOT_WAIT_NOTICE_SECONDS is logged (a run that only
    waits, e.g. on a slot a killed run still holds, otherwise looks hung). A failed lease renewal (the server
    briefly away) is logged, not fatal: ending a running extraction for it would lose more than the slot
    count is worth.

    The acquisition runs in a thread of its own, holding the slot until this context exits, so that the wait
    can end when ``cancel`` is set (the flow run is being stopped): a task blocked in the acquisition kept
    its run alive until the worker SIGKILLed it. A slot granted after that is given back at once.

    Each request is a single try (``max_retries=0``); on "all taken" (HTTP 423) this thread sleeps the
    server's Retry-After itself, in a wait that the stop ends. Prefect's own retry loop sleeps inside its
    acquisition service, and that service finishes every queued request before the process may exit: a
    stopped run waiting for another run's slot was SIGKILLed at the end of the worker's grace. A timeout
    per request would also end the wait, but a request cut off mid-flight can leave a granted slot behind
    until its lease lapses; a single try that is answered never does."""
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
    if cancel is not None and cancel.is_set():  # (a task the pool starts after the stop: no request at all)
        raise ExtractionCancelled()
    granted, release, over = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        _quiet_slot_denials()
        try:
            while not release.is_set():
                try:
                    with concurrency(limit_name, occupy=1, strict=limit_name.startswith("gpu-"), max_retries=0,
                                     lease_duration=SLOT_LEASE_SECONDS, raise_on_lease_renewal_failure=False):
                        granted.set()
                        release.wait()
                    return
                except ConcurrencySlotAcquisitionError as exc:
                    wait = None if granted.is_set() else _retry_after(exc)
                    if wait is None:  # (not "all taken": e.g. a missing limit, the server unreachable)
                        raise
                    release.wait(wait)  # (set when the task stops waiting: no further request)
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


class _QuietDenials(logging.Filter):
    """Drops Prefect's ERROR "Service ... failed to process item" for a slot request answered "all taken" (423):
    with single-try requests (``_slot``) each denial is an expected answer, not a failure, and one ERROR line
    per Retry-After would bury the run's log. Any other failure of the service is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != "Service %r failed to process item %r" or len(args) != 2 or not isinstance(args[1], tuple):
            return True
        future = args[1][-1] if args[1] else None
        try:
            exc = future.exception(timeout=0) if future is not None and future.done() else None
        except Exception:  # noqa: BLE001 -- (cancelled, or not a future): keep the record
            return True
        return exc is None or _retry_after(exc) is None


def _quiet_slot_denials() -> None:
    log = logging.getLogger("prefect._internal.concurrency")
    if not any(isinstance(f, _QuietDenials) for f in log.filters):
        log.addFilter(_QuietDenials())


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked a denied slot request to wait (HTTP 423's Retry-After, at least 0.1 s and at
    most SLOT_RETRY_MAX_SECONDS), or None when ``exc`` is not a denial."""
    import httpx

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 423:
            try:
                wait = float(exc.response.headers.get("Retry-After", 1.0))
            except ValueError:
                wait = 1.0
            return min(max(wait, 0.1), SLOT_RETRY_MAX_SECONDS)
        exc = exc.__cause__ or exc.__context__
    return None


@task(name="check-store", cache_policy=NO_CACHE)
def check_store(store, dataset, features: list[str], min_train_videos: int, predict_subset: str = "test",
                mode: str = "utal", failed: list[str] = ()) -> steps.StoreCheck:
    return steps.check_store(store, dataset, features, min_train_videos, predict_subset, mode, failed)


@task(name="train", cache_policy=NO_CACHE)
def train(training_cfg, store, dataset, out_dir: Path, video_ids: list[str] | None = None):
    return steps.train_model(training_cfg, store, dataset, out_dir, video_ids)


@task(name="predict", cache_policy=NO_CACHE)
def predict(checkpoint: Path, store, dataset, subset: str, device: str, video_ids: list[str] | None = None) -> dict:
    return steps.predict_detections(checkpoint, store, dataset, subset, device, video_ids)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(dataset, predictions: dict, subset: str):
    return steps.evaluate(dataset, predictions, subset)
